"""No secret escapes: not in logs, exceptions, reprs or pickles, nor to another host.

A canary token goes through the whole hub flow with logging on at every level
(an injected structlog logger at debug, and the standard-library default
logger with every logger of the process at DEBUG), and through every fault
of the rogue servers. It must never show up in a log line, in the text,
``repr`` or pickle of an exception (with its chained causes), or in the
``repr`` of a client, manager or session. XSRF tokens and OAuth state in
error pages and URLs are redacted. The token is never sent to a host
outside the hub and lab URL space, even when a server redirects there. TLS
verification is on by default: a server whose certificate comes from a
private CA is refused unless that CA is given.
"""

from __future__ import annotations

import datetime
import logging
import pickle
import re
import traceback
from typing import Any, Callable, Iterator, List

import pytest

from nublado_sync import (
    NubladoClient,
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoImageByClass,
    NubladoRedirectError,
    NubladoWebError,
    NubladoWebSocketError,
    open_lab_session,
)

from ..hub_testbed import TestHub
from ..log_capture import LogCapture
from ..rogue_http import Reply, RogueServer, running_rogue_server
from ..rogue_kernel import ERROR_PAGE, PAGE_SECRETS, Faults, RogueKernelServer, running_rogue_kernel
from . import test_faults as faults

pytestmark = pytest.mark.integration

TOKEN = faults.TOKEN


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger of the process at DEBUG, captured (urllib3 and websocket too)."""
    caplog.set_level(logging.DEBUG)
    return caplog


def texts_of(exc: BaseException) -> List[str]:
    """Every way an exception can be shown or stored."""
    return [
        str(exc),
        repr(exc),
        repr(exc.__dict__),
        "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        pickle.dumps(exc).decode("latin-1"),
    ]


def assert_no_secret(texts: List[str], secrets: List[str]) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in text, f"{secret!r} in {text[:300]!r}"


def log_texts(capture: LogCapture, caplog: pytest.LogCaptureFixture) -> List[str]:
    return capture.lines + [r.getMessage() for r in caplog.records] + [caplog.text]


_URL_SECRET = re.compile(r"(?:[?&]|%3F|%26)(?:state|code|_xsrf)(?:=|%3D)([^&\s\"'%]*)")


def assert_url_secrets_redacted(lines: List[str]) -> None:
    """Every ``state=``, ``code=`` and ``_xsrf=`` in a URL carries ``<redacted>``."""
    for line in lines:
        for value in _URL_SECRET.findall(line):
            assert value in ("<redacted>", ""), line


# The whole hub flow


def _flow(hub: TestHub, client: NubladoClient, texts: List[str]) -> None:
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn(seconds(120))
    # A warning-level line, with the hub's record of the running lab.
    assert not client.is_lab_stopped(log_running=True)
    client.auth_to_lab()
    manager = client.lab_session(notebook_name="secrets.ipynb")
    with manager as session:
        texts += [repr(client), repr(manager), repr(session)]
        assert session.run_python("print('ok')") == "ok\n"
        with pytest.raises(NubladoExecutionError) as failed:
            session.run_python("raise ValueError('boom')")
        texts += texts_of(failed.value)
        with pytest.raises(NubladoExecutionTimeoutError) as late:
            session.run_python("import time; time.sleep(30)", timeout=seconds(1))
        texts += texts_of(late.value)
        texts += [repr(session)]
    texts += [repr(manager)]
    client.stop_lab()
    client.wait_for_lab_stopped(seconds(60))
    # Failures after the stop: a lab login and a session on a dead lab.
    for action in (client.auth_to_lab, lambda: client.lab_session().__enter__()):
        with pytest.raises(NubladoError) as info:
            action()
        texts += texts_of(info.value)


@pytest.mark.parametrize("logger", ["structlog-debug", "stdlib-default"])
def test_canary_through_the_hub_flow(
    hub: TestHub, everything_logged: pytest.LogCaptureFixture, logger: str
) -> None:
    canary = hub.tokens["carol"]
    capture = LogCapture()
    texts: List[str] = []
    injected = capture.logger() if logger == "structlog-debug" else None
    try:
        with NubladoClient("carol", canary, hub_url=hub.url, logger=injected) as client:
            _flow(hub, client, texts)
        with NubladoClient("carol", canary + "x", hub_url=hub.url, logger=injected) as bad:
            with pytest.raises(NubladoWebError) as info:
                bad.auth_to_hub()
            texts += [*texts_of(info.value), repr(bad)]
    finally:
        hub.stop_all()
    logs = log_texts(capture, everything_logged)
    if injected is not None:
        assert len(capture.lines) > 30, "debug logging was not on"
        assert {"debug", "info", "warning"} <= {
            level for line in capture.lines for level in re.findall(r'"level": "(\w+)"', line)
        }
        # Our own lines show URLs with their secrets redacted.
        assert_url_secrets_redacted(capture.lines)
    else:
        assert any(r.name == "nublado_sync" for r in everything_logged.records)
    assert_no_secret(logs + texts, [canary])


# Every fault of the rogue servers


def _hanging(param: Any) -> bool:
    """Whether a matrix entry is a known bug (xfail): those may hang."""
    return any(m.name == "xfail" for m in getattr(param, "marks", ()))


def _value(param: Any) -> Any:
    return param.values[0] if hasattr(param, "values") else param


def _cases(matrix: dict[str, Any]) -> tuple[list[str], list[Any]]:
    names = [n for n, p in matrix.items() if not _hanging(p)]
    return names, [_value(matrix[n]) for n in names]


SECRETS = [TOKEN, *PAGE_SECRETS]


@pytest.mark.parametrize("case", _cases(faults.OPEN_FAULTS)[1], ids=_cases(faults.OPEN_FAULTS)[0])
def test_open_faults_leak_no_secret(case: Any, everything_logged: pytest.LogCaptureFixture) -> None:
    capture = LogCapture()
    with running_rogue_kernel(TOKEN) as rogue, running_rogue_server() as elsewhere:
        rogue.faults = case.faults
        rogue.redirect_target = elsewhere.url + "stolen?state=ROGUE-OAUTH-STATE"
        manager = faults.lab(rogue.url, logger=capture.logger())
        with pytest.raises(NubladoError) as info, manager:
            pass
        assert elsewhere.seen == []
    texts = [*texts_of(info.value), repr(manager)]
    assert_no_secret(log_texts(capture, everything_logged) + texts, SECRETS)


@pytest.mark.parametrize(
    "case", _cases(faults.EXECUTE_FAULTS)[1], ids=_cases(faults.EXECUTE_FAULTS)[0]
)
def test_execute_faults_leak_no_secret(
    case: Any, everything_logged: pytest.LogCaptureFixture
) -> None:
    capture = LogCapture()
    with running_rogue_kernel(TOKEN) as rogue:
        rogue.faults = case.faults
        manager = faults.lab(rogue.url, logger=capture.logger(), max_websocket_size=2**20)
        with manager as session:
            with pytest.raises(NubladoError) as info:
                session.execute(case.code_text, timeout=seconds(faults.DEADLINE))
            texts = [*texts_of(info.value), repr(session), repr(manager)]
    assert_no_secret(log_texts(capture, everything_logged) + texts, SECRETS)


@pytest.mark.parametrize("case", _cases(faults.HUB_FAULTS)[1], ids=_cases(faults.HUB_FAULTS)[0])
def test_hub_faults_leak_no_secret(case: Any, everything_logged: pytest.LogCaptureFixture) -> None:
    capture = LogCapture()
    with running_rogue_server() as hub:
        case.setup(hub)
        client = NubladoClient(
            "alice", TOKEN, hub_url=hub.url, timeout=seconds(2), logger=capture.logger()
        )
        with client, pytest.raises(NubladoError) as info:
            case.action(client)
        texts = [*texts_of(info.value), repr(client)]
    logs = log_texts(capture, everything_logged)
    assert_no_secret(logs + texts, SECRETS)
    assert_url_secrets_redacted(capture.lines + texts[:3])


def test_error_page_secrets_redacted() -> None:
    with running_rogue_kernel(TOKEN) as rogue:
        rogue.faults = Faults(http={"create": "html_error"})
        with pytest.raises(NubladoWebError) as info, faults.lab(rogue.url):
            pass
    exc = info.value
    assert exc.status == 500
    assert exc.body is not None
    assert "Internal rogue error" in exc.body
    assert "<redacted>" in exc.body
    assert_no_secret(texts_of(exc), SECRETS)


# The token stays inside the URL space


@pytest.fixture
def elsewhere() -> Iterator[RogueServer]:
    with running_rogue_server() as server:
        yield server


@pytest.fixture
def rogue_hub() -> Iterator[RogueKernelServer]:
    """A rogue server that plays both hub and lab for NubladoClient."""
    with running_rogue_kernel(TOKEN) as server:
        yield server


def hub_client(server: RogueKernelServer, **kwargs: Any) -> NubladoClient:
    kwargs.setdefault("timeout", seconds(2))
    return NubladoClient("alice", TOKEN, hub_url=server.url, **kwargs)


def test_rogue_hub_flow_works(rogue_hub: RogueKernelServer) -> None:
    # The baseline for the redirect tests below: the flow reaches the kernel.
    with hub_client(rogue_hub) as client:
        client.auth_to_hub()
        client.auth_to_lab()
        with client.lab_session() as session:
            assert session.run_python("print('through the hub')") == "through the hub\n"
    assert rogue_hub.live_sessions() == []
    assert all(s.headers.get("authorization") == f"Bearer {TOKEN}" for s in rogue_hub.seen)


REDIRECTS: dict[str, Callable[[RogueKernelServer, str], Any]] = {}


def _redirecting(route: str, action: Callable[[NubladoClient], Any]) -> Callable[..., Any]:
    def run(server: RogueKernelServer, target: str) -> Any:
        server.redirect_target = target
        if route == "handshake":
            server.faults = Faults(handshake="redirect")
        else:
            server.faults = Faults(http={route: "redirect_out"})
        with hub_client(server) as client:
            return action(client)

    return run


def _open_session(client: NubladoClient) -> None:
    with client.lab_session():
        pass


@pytest.mark.parametrize(
    ("route", "action", "error"),
    [
        ("hub_home", NubladoClient.auth_to_hub, NubladoRedirectError),
        ("lab", NubladoClient.auth_to_lab, NubladoRedirectError),
        ("create", _open_session, NubladoWebError),
        ("handshake", _open_session, NubladoWebSocketError),
    ],
    ids=["hub-login", "lab-login", "session-create", "websocket-handshake"],
)
@pytest.mark.parametrize(
    "where",
    ["other-port", "scheme-relative", "userinfo"],
)
def test_redirects_never_carry_the_token_out(
    rogue_hub: RogueKernelServer,
    elsewhere: RogueServer,
    route: str,
    action: Callable[[NubladoClient], Any],
    error: type,
    where: str,
) -> None:
    port = elsewhere.port
    target = {
        "other-port": f"http://127.0.0.1:{port}/hub/home?state=ROGUE-OAUTH-STATE",
        "scheme-relative": f"//127.0.0.1:{port}/user/alice/lab",
        "userinfo": f"http://127.0.0.1:{rogue_hub.port}@127.0.0.1:{port}/user/alice/",
    }[where]
    with pytest.raises(error) as info:
        _redirecting(route, action)(rogue_hub, target)
    assert elsewhere.seen == []
    assert_no_secret(texts_of(info.value), SECRETS)


def test_progress_redirect_out(elsewhere: RogueServer) -> None:
    with running_rogue_server() as hub:
        hub.redirect(
            "/hub/api/users/alice/server/progress",
            f"{elsewhere.url}progress?state=ROGUE-OAUTH-STATE",
        )
        with (
            NubladoClient("alice", TOKEN, hub_url=hub.url) as client,
            pytest.raises(NubladoRedirectError) as info,
        ):
            client.wait_for_spawn(seconds(5))
    assert elsewhere.seen == []
    assert "ROGUE-OAUTH-STATE" not in str(info.value)


def test_token_never_in_a_url(rogue_hub: RogueKernelServer) -> None:
    with hub_client(rogue_hub) as client:
        client.auth_to_hub()
        client.auth_to_lab()
        with client.lab_session() as session:
            session.run_python("print(1)")
    assert rogue_hub.seen
    assert all(TOKEN not in s.path for s in rogue_hub.seen)


# TLS


@pytest.fixture
def tls_server() -> Iterator[RogueKernelServer]:
    with running_rogue_kernel(TOKEN, tls=True) as server:
        yield server


def test_self_signed_refused_by_default(tls_server: RogueKernelServer) -> None:
    with pytest.raises(NubladoWebError) as info, open_lab_session(tls_server.url, TOKEN):
        pass
    assert "is not trusted" in str(info.value)
    with (
        NubladoClient("alice", TOKEN, hub_url=tls_server.url) as client,
        pytest.raises(NubladoWebError) as hub_info,
    ):
        client.auth_to_hub()
    assert "is not trusted" in str(hub_info.value)
    # The TLS handshake failed before any request: the token never went out.
    assert tls_server.seen == []
    assert_no_secret(texts_of(info.value) + texts_of(hub_info.value), [TOKEN])


def test_private_ca_accepted_when_given(tls_server: RogueKernelServer) -> None:
    ca = str(tls_server.ca_file)
    with open_lab_session(tls_server.url, TOKEN, verify=ca) as session:
        # The WebSocket went over wss, verified against the same CA.
        assert session.run_python("print('over tls')") == "over tls\n"
    with NubladoClient("alice", TOKEN, hub_url=tls_server.url, verify=ca) as client:
        client.auth_to_hub()
        client.auth_to_lab()
        with client.lab_session() as session:
            assert session.run_python("print('hub over tls')") == "hub over tls\n"
    assert tls_server.live_sessions() == []


def test_wrong_ca_refused(tls_server: RogueKernelServer) -> None:
    with running_rogue_kernel(TOKEN, tls=True) as other:
        wrong = str(other.ca_file)
        with pytest.raises(NubladoWebError), open_lab_session(tls_server.url, TOKEN, verify=wrong):
            pass
    assert tls_server.seen == []


@pytest.mark.parametrize("entry", ["open_lab_session", "NubladoClient"])
def test_verify_survives_ca_bundle_variables(
    tls_server: RogueKernelServer, monkeypatch: pytest.MonkeyPatch, entry: str
) -> None:
    # Common in conda, corporate and CI environments. requests lets them
    # override a session's verify; an explicit CA must still win.
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    monkeypatch.setenv("CURL_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt")
    ca = str(tls_server.ca_file)
    if entry == "open_lab_session":
        with open_lab_session(tls_server.url, TOKEN, verify=ca) as session:
            session.run_python("print(1)")
    else:
        with NubladoClient("alice", TOKEN, hub_url=tls_server.url, verify=ca) as client:
            client.auth_to_hub()


def test_hub_page_redirect_keeps_xsrf_out_of_errors() -> None:
    with running_rogue_server() as hub:
        hub.route(
            "/hub/home",
            Reply(403, {"Content-Type": "text/html"}, ERROR_PAGE),
        )
        with (
            NubladoClient("alice", TOKEN, hub_url=hub.url) as client,
            pytest.raises(NubladoWebError) as info,
        ):
            client.auth_to_hub()
    assert_no_secret(texts_of(info.value), SECRETS)
