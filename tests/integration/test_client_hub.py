"""NubladoClient end to end against a real JupyterHub that behaves like Nublado."""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import pytest

from nublado_sync import (
    NubladoClient,
    NubladoError,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageSize,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    NubladoWebError,
)

from ..hub_testbed import TestHub, resolve_localhost_subdomains, running_hub
from ..log_capture import LogCapture
from ..rogue_http import Reply, running_rogue_server
from .conftest import seconds

pytestmark = pytest.mark.integration

SPAWN_TIMEOUT = seconds(90)


@pytest.fixture(scope="module")
def subdomain_hub() -> Iterator[TestHub]:
    with resolve_localhost_subdomains(), running_hub(subdomains=True) as hub:
        yield hub


@pytest.fixture(scope="module")
def api_token_hub() -> Iterator[TestHub]:
    with running_hub(api_token_login=True, documents=True) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _labs_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    # Each test starts and ends with every lab stopped.
    yield
    for name in ("hub", "subdomain_hub", "api_token_hub"):
        if name in request.fixturenames:
            request.getfixturevalue(name).stop_all()


def full_flow(hub: TestHub, user: str, client: NubladoClient) -> list[Any]:
    """The whole flow as a user runs it; returns the progress events."""
    client.auth_to_hub()
    assert client.is_lab_stopped()
    client.spawn_lab(NubladoImageByClass("latest-weekly", NubladoImageSize.Small, debug=True))
    assert hub.spawn_forms(user)[-1] == {
        "image_class": ["latest-weekly"],
        "size": ["Small"],
        "enable_debug": ["true"],
    }
    events = list(client.watch_spawn_progress())
    assert events[-1].ready
    progress = [e.progress for e in events]
    assert progress == sorted(progress)
    assert not client.is_lab_stopped()
    client.auth_to_lab()
    with client.lab_session(notebook_name="flow.ipynb") as session:
        out = session.run_python("import os; print(os.environ['JUPYTERHUB_USER'])")
        assert out == f"{user}\n"
        assert len(hub.lab_sessions(user)) == 1
    assert hub.lab_sessions(user) == []
    client.stop_lab()
    client.wait_for_lab_stopped(seconds(60))
    assert client.is_lab_stopped()
    return events


def test_full_flow(hub: TestHub) -> None:
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        events = full_flow(hub, "alice", client)
    assert len(events) >= 2


def test_full_flow_with_discovery(hub: TestHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_rogue_server() as discovery:
        document = {"services": {"ui": {"nublado": {"url": hub.url.rstrip("/")}}}}
        discovery.route("/discovery", Reply(200, body=json.dumps(document).encode()))
        monkeypatch.setenv("REPERTOIRE_BASE_URL", discovery.url)
        with NubladoClient("bob", hub.tokens["bob"]) as client:
            full_flow(hub, "bob", client)
            assert client.hub_url == hub.url


def test_full_flow_subdomains(subdomain_hub: TestHub) -> None:
    hub = subdomain_hub
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        full_flow(hub, "alice", client)
        # The lab host was learned from the lab login's redirects.
        assert client.lab_url.startswith("http://alice.hub.localhost:")


def test_full_flow_token_is_api_token_and_documents_labs(api_token_hub: TestHub) -> None:
    hub = api_token_hub
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        full_flow(hub, "alice", client)


def test_spawn_form_for_tag_and_reference(hub: TestHub) -> None:
    with NubladoClient("carol", hub.tokens["carol"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByTag("w_2026_40", NubladoImageSize.Fine))
        client.wait_for_spawn(SPAWN_TIMEOUT)
        client.stop_lab()
        client.wait_for_lab_stopped(seconds(60))
        client.spawn_lab(NubladoImageByReference("registry.example/lab:w_2026_40"))
        client.wait_for_spawn(SPAWN_TIMEOUT)
    forms = hub.spawn_forms("carol")[-2:]
    assert forms == [
        {"image_tag": ["w_2026_40"], "size": ["Fine"]},
        {"image_list": ["registry.example/lab:w_2026_40"], "size": ["Large"]},
    ]


def test_failed_spawn(hub: TestHub) -> None:
    # A failure after the hub answered the spawn form (one within a second
    # makes the form POST itself fail with 500).
    hub.set_spawn_behaviour("bob", fail=True, delay=1.5)
    try:
        with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
            client.auth_to_hub()
            client.spawn_lab(NubladoImageByClass())
            with pytest.raises(NubladoSpawnError) as info:
                client.wait_for_spawn(SPAWN_TIMEOUT)
    finally:
        hub.set_spawn_behaviour("bob")
    assert "failed" in str(info.value).lower()
    assert info.value.log
    assert info.value.log[-1] == str(info.value)


def test_spawn_timeout(hub: TestHub) -> None:
    hub.set_spawn_behaviour("carol", delay=60)
    try:
        with NubladoClient("carol", hub.tokens["carol"], hub_url=hub.url) as client:
            client.auth_to_hub()
            client.spawn_lab(NubladoImageByClass())
            start = time.monotonic()
            with pytest.raises(NubladoSpawnTimeoutError) as info:
                client.wait_for_spawn(seconds(3))
            # The deadline plus a generous 3 s margin.
            assert time.monotonic() - start < 3 + 3
    finally:
        hub.set_spawn_behaviour("carol")
    assert info.value.log  # the progress seen before the deadline


def test_wrong_token(hub: TestHub) -> None:
    client = NubladoClient("alice", "not-a-valid-token", hub_url=hub.url)
    with client, pytest.raises(NubladoWebError) as info:
        client.auth_to_hub()
    assert info.value.status in (401, 403)
    assert "not-a-valid-token" not in str(info.value)


def test_lab_not_running(hub: TestHub) -> None:
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        client.auth_to_hub()
        assert client.is_lab_stopped()
        with pytest.raises(NubladoError):
            client.auth_to_lab()
        client.stop_lab()  # already stopped: a no-op


def test_expired_lab_login_is_refreshed(hub: TestHub) -> None:
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(SPAWN_TIMEOUT)
        client.auth_to_lab()
        jar = client._http.session.cookies
        lab_cookies = [c for c in jar if c.name.startswith("jupyterhub-user-")]
        assert lab_cookies
        # The lab login expires: its cookie is gone. The next lab call is
        # redirected into OAuth; the client logs in again and retries.
        for cookie in lab_cookies:
            jar.clear(cookie.domain, cookie.path, cookie.name)
        with client.lab_session() as session:
            assert session.run_python("print('refreshed')") == "refreshed\n"
        # An explicit refresh works too.
        client.auth_to_lab()
        assert any(c.name.startswith("jupyterhub-user-") for c in jar)


def test_two_users_in_one_process(hub: TestHub) -> None:
    clients = [NubladoClient(u, hub.tokens[u], hub_url=hub.url) for u in ("alice", "bob")]
    try:
        for client in clients:
            client.auth_to_hub()
            client.spawn_lab(NubladoImageByClass())
        for client in clients:
            client.wait_for_spawn(SPAWN_TIMEOUT)
            client.auth_to_lab()
        managers = [c.lab_session() for c in clients]
        sessions = [m.__enter__() for m in managers]
        try:
            for client, session in zip(clients, sessions):
                out = session.run_python("import os; print(os.environ['JUPYTERHUB_USER'])")
                assert out == f"{client.username}\n"
        finally:
            for manager in managers:
                manager.__exit__(None, None, None)
        jars = [{(c.name, c.value) for c in client._http.session.cookies} for client in clients]
        assert not jars[0] & jars[1]
    finally:
        for client in clients:
            client.close()


def test_token_never_logged_or_raised(hub: TestHub) -> None:
    token = hub.tokens["alice"]
    capture = LogCapture()
    texts: list[str] = []
    with NubladoClient("alice", token, hub_url=hub.url, logger=capture.logger()) as client:
        full_flow(hub, "alice", client)
        texts.append(repr(client))
        # Failures too: a lab call after the stop, a session on a dead lab.
        for action in (client.auth_to_lab, lambda: client.lab_session().__enter__()):
            try:
                action()
            except NubladoError as e:
                texts.extend([str(e), repr(e), repr(e.__dict__)])
    with NubladoClient("alice", token + "x", hub_url=hub.url, logger=capture.logger()) as bad:
        try:
            bad.auth_to_hub()
        except NubladoError as e:
            texts.extend([str(e), repr(e), repr(e.__dict__)])
    assert len(capture.lines) > 20  # debug logging really was on
    for text in capture.lines + texts:
        assert token not in text


def test_run_notebook_with_the_lab_extension(hub: TestHub) -> None:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [
            {
                "cell_type": "code",
                "id": "a",
                "metadata": {},
                "execution_count": None,
                "outputs": [],
                "source": "print('from the extension')",
            }
        ],
    }
    with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(SPAWN_TIMEOUT)
        client.auth_to_lab()
        result = client.run_notebook(json.dumps(notebook), kernel_name="lsst")
    assert result.error is None
    executed = json.loads(result.notebook)
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "from the extension\n"
