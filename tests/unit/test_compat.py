"""Compatibility with rubin-nublado-client: its tests' behaviours, ported by dropping await.

Each test here takes a behaviour that the asynchronous client's own test
suite (lsst-sqre/nublado, ``client/tests``) checks, and checks it against
this package in the shape a porting user writes it: the same calls in the
same order, ``await`` removed, the client made from a user name and token
with the hub found by service discovery (``REPERTOIRE_BASE_URL``, which the
``mock_jupyter`` fixture sets). The kit stands in for upstream's mock.

Where this package behaves differently on purpose, the test checks the
difference explicitly and says why; each is listed in ``docs/porting.rst``.
The same flows run against a real JupyterHub in
``tests/integration/test_compat.py``. The kit's own differences from
upstream's mock (fixtures, out-of-order calls) are tested with the kit.
"""

from __future__ import annotations

import datetime
import json
import pickle
import uuid
from dataclasses import dataclass
from typing import Any, Dict, List

import pytest
import requests

from nublado_sync import (
    CodeContext,
    NotebookExecutionResult,
    NubladoClient,
    NubladoError,
    NubladoExecutionError,
    NubladoImage,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageClass,
    NubladoImageSize,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoSpawnFormError,
    NubladoWebError,
    NubladoWebSocketError,
    SlackCodeBlock,
    SlackTextBlock,
    SlackTextField,
)
from nublado_sync.testing import MockJupyter, MockJupyterAction, MockJupyterState

from ..log_capture import LogCapture

pytest_plugins = ["nublado_sync.testing.pytest_plugin"]

USER = "rachel"
TOKEN = "token-of-rachel-91d2"
UTC = datetime.timezone.utc

# Both URL layouts a Nublado deployment uses: one host, and per-user
# subdomains (where the lab's host is learned on the first lab login).
layouts = pytest.mark.parametrize(
    "mock_jupyter",
    [{"users": {USER: TOKEN}}, {"users": {USER: TOKEN}, "use_subdomains": True}],
    ids=["one-host", "subdomains"],
    indirect=True,
)


@pytest.fixture
def mock_jupyter(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    # The kit's fixture, with the layout as a parameter instead of a marker.
    options = getattr(request, "param", {"users": {USER: TOKEN}})
    with MockJupyter(**options) as mock:
        monkeypatch.setenv("REPERTOIRE_BASE_URL", mock.discovery_url)
        yield mock


@pytest.fixture
def client(mock_jupyter: MockJupyter) -> Any:
    # Upstream: NubladoClient(username=..., token=..., discovery_client=...).
    with NubladoClient(username=USER, token=TOKEN) as client:
        yield client


# The hub flow (upstream's test_hub_flow)


@layouts
def test_hub_flow(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    assert mock_jupyter.get_state(USER) == MockJupyterState.LOGGED_OUT
    client.auth_to_hub()
    assert mock_jupyter.get_state(USER) == MockJupyterState.LOGGED_IN
    assert client.is_lab_stopped()

    client.spawn_lab(NubladoImageByClass())
    assert mock_jupyter.get_last_spawn_form(USER) == {
        "image_class": "recommended",
        "size": "Large",
    }
    assert mock_jupyter.get_state(USER) == MockJupyterState.SPAWN_PENDING

    progress = -1
    for message in client.watch_spawn_progress():
        if message.ready:
            break
        assert message.progress > progress
        progress = message.progress

    assert mock_jupyter.get_state(USER) == MockJupyterState.LAB_RUNNING
    assert not client.is_lab_stopped()
    assert mock_jupyter.get_session(USER) is None
    # No auth_to_lab first, as upstream's test: the first lab call logs in
    # (and, with subdomains, learns the lab's host and goes there).
    with client.lab_session() as session:
        assert session.run_python("print(2+2)").strip() == "4"
        data = mock_jupyter.get_session(USER)
        assert data is not None
        assert data.kernel_name == "lsst"
        assert uuid.UUID(data.path)
        assert data.type == "console"
        # Upstream names a session without a notebook "(no notebook)".
        assert data.name == ""
    assert client.lab_url == mock_jupyter.lab_url(USER)

    with client.lab_session("notebook.ipynb", kernel_name="custom") as session:
        assert session.run_python("print(3+2)").strip() == "5"
        data = mock_jupyter.get_session(USER)
        assert data is not None
        assert data.kernel_name == "custom"
        assert data.name == "notebook.ipynb"
        # Upstream makes a "notebook" session at the notebook's path, which
        # jupyter-server-documents servers cannot delete again; here it is
        # always a console session at a unique path (docs/porting.rst).
        assert data.type == "console"
        assert data.path != "notebook.ipynb"

    # The progress can be watched again while the lab runs.
    assert [m.ready for m in client.watch_spawn_progress()] == [True]

    client.stop_lab()
    assert client.is_lab_stopped()
    assert mock_jupyter.get_state(USER) == MockJupyterState.LOGGED_IN


def test_spawn_progress_logged_at_info(mock_jupyter: MockJupyter) -> None:
    # Consumers' logs (and their tests) look for upstream's words.
    capture = LogCapture()
    with NubladoClient(USER, TOKEN, logger=capture.logger()) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn()
    events = [json.loads(line) for line in capture.lines]
    spawn = [e for e in events if e["event"].startswith("Spawn ")]
    assert [e["level"] for e in spawn] == ["info"] * len(spawn)
    assert spawn[0]["event"].startswith("Spawn in progress (0s elapsed): ")
    assert spawn[-1]["event"].startswith("Spawn complete (")
    assert all(isinstance(e["elapsed"], int) for e in spawn)


# Notebooks (upstream's test_run_notebook)


@layouts
def test_run_notebook(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    notebook = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})
    expected = NotebookExecutionResult(notebook=notebook.replace("[]", '[{"x": 1}]'))
    mock_jupyter.register_notebook_result(notebook, expected)

    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()

    # No auth_to_lab, as upstream's test.
    result = client.run_notebook(notebook)
    assert result == expected
    assert mock_jupyter.get_last_notebook_kernel(USER) is None

    result = client.run_notebook(notebook, kernel_name="Custom")
    assert result == expected
    assert mock_jupyter.get_last_notebook_kernel(USER) == "Custom"


# Spawn forms (upstream's test_lab_form)


@dataclass
class FormCase:
    image: NubladoImage
    form: Dict[str, str]


FORM_CASES = [
    FormCase(
        NubladoImageByReference(reference="example/lab:some-tag", debug=True),
        {"image_list": "example/lab:some-tag", "size": "Large", "enable_debug": "true"},
    ),
    FormCase(NubladoImageByTag(tag="some-tag"), {"image_tag": "some-tag", "size": "Large"}),
    FormCase(NubladoImageByClass(), {"image_class": "recommended", "size": "Large"}),
    FormCase(
        NubladoImageByClass(
            image_class=NubladoImageClass.LATEST_RELEASE, size=NubladoImageSize.Small, debug=True
        ),
        {"image_class": "latest-release", "size": "Small", "enable_debug": "true"},
    ),
]


def test_lab_form(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    client.auth_to_hub()
    for case in FORM_CASES:
        client.spawn_lab(case.image)
        assert mock_jupyter.get_last_spawn_form(USER) == case.form
        client.wait_for_spawn()
        client.stop_lab()


# Image choices in upstream's stored (pydantic) shape


@pytest.mark.parametrize("case", FORM_CASES, ids=lambda c: c.form.get("image_class", "x"))
def test_image_shape_round_trip(case: FormCase) -> None:
    data = case.image.to_dict()
    # What upstream's model_dump(mode="json") gives.
    assert data["image_class"] == case.image.image_class.value
    assert data["size"] == case.image.size.value
    assert data["debug"] is case.image.debug
    loaded = NubladoImage.from_dict(json.loads(json.dumps(data)))
    assert loaded == case.image
    assert type(loaded).from_dict(data) == case.image
    assert NubladoImage.model_validate(data) == case.image
    assert case.image.model_dump(mode="json") == data


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"image_class": "recommended", "size": "Large"}, NubladoImageByClass()),
        (
            {"class": "latest-weekly", "size": "Small"},
            NubladoImageByClass("latest-weekly", "Small"),
        ),
        ({}, NubladoImageByClass()),
        ({"image_class": "by-tag", "tag": "w_2026_40"}, NubladoImageByTag("w_2026_40")),
        ({"tag": "w_2026_40", "debug": True}, NubladoImageByTag("w_2026_40", debug=True)),
        (
            {"image_class": "by-reference", "reference": "r/lab:1", "size": "Huge", "debug": False},
            NubladoImageByReference("r/lab:1", NubladoImageSize.Huge),
        ),
        ({"reference": "r/lab:1"}, NubladoImageByReference("r/lab:1")),
    ],
)
def test_image_shapes_read(data: Dict[str, Any], expected: NubladoImage) -> None:
    assert NubladoImage.from_dict(data) == expected
    assert expected.image_class.value == NubladoImage.from_dict(data).to_dict()["image_class"]


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"image_class": "by-tag"}, "needs a 'tag'"),
        ({"image_class": "biggest"}, "Unknown image class 'biggest'"),
        ({"size": "Big"}, "Unknown size 'Big'"),
        ({"image_class": "recommended", "tag": "x"}, "Unknown key 'tag'"),
        ({"debug": "yes"}, "debug must be true or false"),
        ({"class": "recommended", "image_class": "recommended"}, "both class and image_class"),
        (["recommended"], "must be a mapping"),
    ],
)
def test_image_shapes_refused(data: Any, words: str) -> None:
    with pytest.raises(NubladoError, match=words):
        NubladoImage.from_dict(data)


def test_image_class_members_and_kinds() -> None:
    # Upstream's enum has the by-tag and by-reference classes too.
    assert NubladoImageByTag("t").image_class is NubladoImageClass.BY_TAG
    assert NubladoImageByReference("r").image_class is NubladoImageClass.BY_REFERENCE
    with pytest.raises(NubladoError, match="needs NubladoImageByTag"):
        NubladoImageByClass(NubladoImageClass.BY_TAG)
    with pytest.raises(NubladoError, match="cannot hold an image chosen by by-tag"):
        NubladoImageByClass.from_dict({"tag": "t"})


# Failures (upstream's test_failures and check_web_exception)


def check_web_exception(
    exc: NubladoWebError, *, start: datetime.datetime, method: str, route: str
) -> None:
    assert route in exc.message
    assert route in str(exc)
    assert exc.method == method
    assert exc.started_at
    assert exc.started_at >= start
    assert exc.failed_at >= exc.started_at
    assert exc.url
    assert route in exc.url
    assert exc.status == 500
    assert route in exc.to_slack().message
    # Safir formats times for reports as "2026-12-02 20:01:02.345".
    started = exc.to_sentry().contexts["info"]["started_at"]
    assert started.startswith(exc.started_at.strftime("%Y-%m-%d %H:%M:%S"))


@layouts
def test_failures(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    start = datetime.datetime.now(tz=UTC)
    notebook = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5})

    mock_jupyter.fail_on(USER, MockJupyterAction.LOGIN)
    with pytest.raises(NubladoWebError) as info:
        client.auth_to_hub()
    check_web_exception(info.value, start=start, method="GET", route="hub/home")

    mock_jupyter.fail_on(USER, MockJupyterAction.SPAWN)
    client.auth_to_hub()
    with pytest.raises(NubladoWebError) as info:
        client.spawn_lab(NubladoImageByClass())
    check_web_exception(info.value, start=start, method="POST", route="hub/spawn")
    # Also a spawn failure here (a class that is both), with the reason.
    assert isinstance(info.value, NubladoSpawnError)

    # Upstream's spawn_lab loads hub/spawn-pending/<user> after the form;
    # this package's never does (the progress stream says all it says), so
    # a failing spawn-pending page cannot fail it (docs/porting.rst).
    mock_jupyter.fail_on(USER, MockJupyterAction.SPAWN_PENDING)
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()
    client.stop_lab()

    mock_jupyter.fail_on(USER, MockJupyterAction.USER)
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()
    with pytest.raises(NubladoWebError) as info:
        client.is_lab_stopped()
    check_web_exception(info.value, start=start, method="GET", route=f"hub/api/users/{USER}")

    mock_jupyter.fail_on(USER, MockJupyterAction.LAB)
    assert not client.is_lab_stopped()
    with pytest.raises(NubladoWebError) as info:
        client.auth_to_lab()
    check_web_exception(info.value, start=start, method="GET", route=f"user/{USER}/lab")

    mock_jupyter.fail_on(USER, MockJupyterAction.RUN_NOTEBOOK)
    client.auth_to_lab()
    with pytest.raises(NubladoWebError) as info:
        client.run_notebook(notebook)
    check_web_exception(
        info.value, start=start, method="POST", route=f"user/{USER}/rubin/execution"
    )

    mock_jupyter.fail_on(USER, MockJupyterAction.CREATE_SESSION)
    with pytest.raises(NubladoWebError) as info, client.lab_session():
        pass
    check_web_exception(info.value, start=start, method="POST", route=f"user/{USER}/api/sessions")

    # Upstream raises when the session cannot be deleted, and leaves the
    # kernel running; here the kernel is deleted instead, so nothing is
    # left and there is nothing to raise (docs/porting.rst).
    mock_jupyter.fail_on(USER, MockJupyterAction.DELETE_SESSION)
    with client.lab_session():
        pass
    assert mock_jupyter.get_sessions(USER) == []

    mock_jupyter.fail_on(USER, MockJupyterAction.DELETE_LAB)
    with pytest.raises(NubladoWebError) as info:
        client.stop_lab()
    check_web_exception(
        info.value, start=start, method="DELETE", route=f"hub/api/users/{USER}/server"
    )


def test_spawn_form_error_is_both_kinds(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    mock_jupyter.fail_on(USER, MockJupyterAction.SPAWN)
    client.auth_to_hub()
    with pytest.raises(NubladoSpawnFormError) as info:
        client.spawn_lab(NubladoImageByClass())
    exc = info.value
    assert isinstance(exc, NubladoSpawnError)
    assert isinstance(exc, NubladoWebError)
    # The reason comes from the progress stream, as JupyterHub reports it.
    assert exc.message.startswith("Spawn failed: the spawner failed (fail_on SPAWN)")
    assert exc.message.endswith("hub/spawn with status 500)")
    assert exc.log == ["Spawn failed: the spawner failed (fail_on SPAWN)"]
    assert "<" not in str(exc)  # words, not a page
    assert pickle.loads(pickle.dumps(exc)).log == exc.log


# The spawn failing (upstream's test_spawn_failure)


def test_spawn_failure(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    mock_jupyter.fail_on(USER, MockJupyterAction.PROGRESS)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    messages = list(client.watch_spawn_progress())
    assert not messages[-1].ready
    # Here the failed event also says so (upstream has no such field).
    assert messages[-1].failed

    client.stop_lab()
    client.spawn_lab(NubladoImageByClass())
    with pytest.raises(NubladoSpawnError) as info:
        client.wait_for_spawn()
    assert "Spawn failed!" in info.value.message
    assert "Spawn failed!" in "\n".join(info.value.log)


# Redirect loops (upstream's test_redirect_loop)


@layouts
def test_redirect_loop(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    mock_jupyter.set_redirect_loop(enabled=True)
    with pytest.raises(NubladoRedirectError) as info:
        client.auth_to_hub()
    assert "/hub/home" in info.value.message

    mock_jupyter.set_redirect_loop(enabled=False)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    mock_jupyter.set_redirect_loop(enabled=True)
    # Upstream raises NubladoWebError here (its event-stream library
    # complains of the content type); here the loop itself is reported,
    # a NubladoRedirectError (docs/porting.rst).
    with pytest.raises(NubladoRedirectError):
        client.wait_for_spawn()

    mock_jupyter.set_redirect_loop(enabled=False)
    client.wait_for_spawn()
    mock_jupyter.set_redirect_loop(enabled=True)
    with pytest.raises(NubladoRedirectError) as info:
        client.auth_to_lab()
    tags = info.value.to_sentry().tags
    assert set(tags) == {"httpx_request_method", "httpx_request_url"}
    assert tags["httpx_request_method"] == "GET"
    assert f"/user/{USER}/" in str(info.value)
    assert f"/user/{USER}/" in tags["httpx_request_url"]


# Code failing (upstream's test_execution_failure)


@layouts
def test_execution_failure(client: NubladoClient, mock_jupyter: MockJupyter) -> None:
    start = datetime.datetime.now(tz=UTC)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn()
    with pytest.raises(NubladoExecutionError) as info, client.lab_session() as session:
        session.run_python("1 / 0")

    exc = info.value
    assert exc.user == USER
    assert exc.code == "1 / 0"
    assert f"{USER}: running code '1 / 0' failed" in str(exc)
    assert "Error:" in str(exc)
    assert "ZeroDivisionError" in str(exc)
    assert exc.context == CodeContext()
    assert exc.started_at
    assert exc.started_at >= start
    assert exc.failed_at >= exc.started_at
    # Upstream leaves status None for an error; here it is the reply's.
    assert exc.status == "error"

    report = exc.to_sentry()
    assert report.tags == {}
    assert "ZeroDivisionError" in report.attachments["nublado_error.txt"]
    assert report.attachments["nublado_code.txt"] == "1 / 0"
    assert report.contexts["info"]["started_at"].startswith(
        exc.started_at.strftime("%Y-%m-%d %H:%M:%S")
    )

    message = exc.to_slack()
    assert message.message == "Error while running code"
    error, code = message.attachments[-2:]
    assert isinstance(error, SlackCodeBlock)
    assert error.heading == "Error"
    assert "ZeroDivisionError" in error.code
    assert isinstance(code, SlackCodeBlock)
    assert code.heading == "Code executed"
    assert code.code == "1 / 0"

    context = CodeContext(
        node="some-node",
        image="some/image:tag",
        notebook="notebook.ipynb",
        cell="some-uuid",
        cell_number="14",
    )
    with pytest.raises(NubladoExecutionError) as info, client.lab_session() as session:
        session.run_python("1 / 0", context=context)
    exc = info.value
    # Upstream: "cell some-uuid of notebook ..."; here the cell is named as a
    # person finds it in JupyterLab, by its position first (docs/porting.rst).
    assert f"{USER}: cell 14 (id 'some-uuid') of notebook notebook.ipynb failed" in str(exc)
    assert "Code: 1 / 0" in str(exc)
    assert "ZeroDivisionError" in str(exc)
    assert exc.context == context
    assert exc.to_sentry().tags == {
        "image": "some/image:tag",
        "node": "some-node",
        "notebook": "notebook.ipynb",
        "cell": "some-uuid",
        "cell_number": "14",
    }
    message = exc.to_slack()
    assert message.message == "Error while running `notebook.ipynb` cell `some-uuid`"
    assert message.blocks == [
        SlackTextBlock("Node", "some-node"),
        SlackTextBlock("Cell", "`notebook.ipynb` cell `some-uuid` (14)"),
    ]
    headings: List[str] = [f.heading for f in message.fields]
    assert headings == ["Started at", "Failed at", "Exception type", "User", "Image"]
    assert message.fields[2] == SlackTextField("Exception type", "NubladoExecutionError")
    assert message.fields[3] == SlackTextField("User", USER)
    assert message.fields[4] == SlackTextField("Image", "some/image:tag")


# from_exception (upstream's exceptions_test, with requests for httpx)


def _failed_response(status: int, url: str, body: str) -> requests.HTTPError:
    response = requests.Response()
    response.status_code = status
    response.url = url
    response._content = body.encode()
    response.encoding = "utf-8"
    request = requests.Request("GET", url).prepare()
    response.request = request
    try:
        response.raise_for_status()
    except requests.HTTPError as e:
        return e
    raise AssertionError("raise_for_status did not raise")


def test_web_error_from_exception_filters_body() -> None:
    e = _failed_response(500, "https://raven.poe/", 'xsrf_token: "Nevermore"')
    exc = NubladoWebError.from_exception(e)
    assert exc.status == 500
    assert exc.method == "GET"
    assert exc.message == "Status 500 from GET https://raven.poe/"
    assert exc.body
    assert "Nevermore" not in exc.body
    assert "<redacted>" in exc.body


def test_web_error_from_exception_filters_url() -> None:
    url = "https://raven.poe/lenore/response_type%3Dcode%26state%3Dlost"
    e = _failed_response(404, url, 'quoth the raven\nxsrf_token: "Nevermore"')
    exc = NubladoWebError.from_exception(e, user="edgar")
    assert exc.user == "edgar"
    assert exc.url
    assert "lost" not in exc.url
    assert "<redacted>" in exc.url
    message = exc.to_slack()
    assert "lost" not in message.message
    assert "<redacted>" in message.message
    (block,) = message.blocks
    assert isinstance(block, SlackTextBlock)
    assert block.heading == "URL"
    assert "state" in block.text
    assert "lost" not in block.text
    (attachment,) = message.attachments
    assert isinstance(attachment, SlackCodeBlock)
    assert attachment.heading == "Response"
    assert "xsrf_token" in attachment.code
    assert "Nevermore" not in attachment.code


def test_web_error_from_transport_exception() -> None:
    request = requests.Request("POST", "http://127.0.0.1:9/hub/spawn").prepare()
    e = requests.ConnectionError("connection refused", request=request)
    exc = NubladoWebError.from_exception(e, "edgar")
    assert exc.message == "ConnectionError: connection refused"
    assert (exc.method, exc.url, exc.status) == ("POST", "http://127.0.0.1:9/hub/spawn", None)
    assert NubladoWebError.from_exception(TimeoutError()).message == "TimeoutError"


def test_websocket_error_from_exception() -> None:
    import websocket

    refused = websocket.WebSocketBadStatusException(
        "Handshake status %d %s", 403, "Forbidden", {}, b"no XSRF"
    )
    exc = NubladoWebSocketError.from_exception(refused, "edgar")
    assert exc.code == 403
    assert exc.body == "no XSRF"
    assert exc.message.startswith("Error talking to lab WebSocket: WebSocket upgrade refused")
    closed = NubladoWebSocketError.from_exception(
        websocket.WebSocketConnectionClosedException("gone"), "edgar"
    )
    assert closed.message == (
        "Error talking to lab WebSocket: WebSocketConnectionClosedException: gone"
    )
    assert closed.code is None
