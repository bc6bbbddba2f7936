"""Compatibility with rubin-nublado-client against a real JupyterHub, one host and subdomains.

The flows of the asynchronous client's own tests, written as a porting
user writes them (``await`` dropped), against the hub test bed in both URL
layouts Nublado uses. ``tests/unit/test_compat.py`` runs the same
behaviours, and those the kit can fake (failures at each step), against the
testing kit.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import pytest

from nublado_sync import (
    NubladoCancelledError,
    NubladoClient,
    NubladoError,
    NubladoImage,
    NubladoImageByClass,
    NubladoSpawnError,
    NubladoSpawnFormError,
    NubladoWebError,
)

from ..hub_testbed import TestHub, resolve_localhost_subdomains, running_hub
from ..log_capture import LogCapture
from .conftest import seconds

pytestmark = pytest.mark.integration

UTC = datetime.timezone.utc
SPAWN_TIMEOUT = seconds(90)
NOTEBOOK = {
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
            "source": "import os; print(os.environ['JUPYTERHUB_USER'])",
        }
    ],
}


@pytest.fixture(scope="module", params=["one-host", "subdomains"])
def layout_hub(request: pytest.FixtureRequest) -> Iterator[TestHub]:
    if request.param == "subdomains":
        with resolve_localhost_subdomains(), running_hub(subdomains=True) as hub:
            yield hub
    else:
        with running_hub() as hub:
            yield hub


@pytest.fixture(autouse=True)
def _labs_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "layout_hub" in request.fixturenames:
        request.getfixturevalue("layout_hub").stop_all()


def subdomains(hub: TestHub) -> bool:
    return ".hub.localhost" in hub.lab_url("alice")


def test_lab_calls_without_auth_to_lab(layout_hub: TestHub) -> None:
    # Upstream's tests open a lab session and run a notebook right after
    # the spawn, with no auth_to_lab: the first lab call logs in. With
    # subdomains that login is what learns the lab's host, and the call
    # retried after it must go there.
    hub = layout_hub
    capture = LogCapture()
    with NubladoClient(
        "alice", hub.tokens["alice"], hub_url=hub.url, logger=capture.logger()
    ) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(SPAWN_TIMEOUT)
        with client.lab_session() as session:
            assert session.run_python("import os; print(os.environ['JUPYTERHUB_USER'])") == (
                "alice\n"
            )
            (created,) = hub.lab_sessions("alice")
            assert created["kernel"]["name"] == "lsst"
            assert created["type"] == "console"
            assert uuid.UUID(created["path"])
        assert hub.lab_sessions("alice") == []
        assert client.lab_url == hub.lab_url("alice")
        if subdomains(hub):
            assert client.lab_url.startswith("http://alice.hub.localhost:")
    # The spawn's progress, in upstream's words at info level.
    events = [json.loads(line) for line in capture.lines]
    spawn = [e for e in events if e["event"].startswith("Spawn ")]
    assert spawn
    assert all(e["level"] == "info" for e in spawn)
    assert spawn[0]["event"].startswith("Spawn in progress (")
    assert spawn[-1]["event"].startswith("Spawn complete (")


def test_run_notebook_without_auth_to_lab(layout_hub: TestHub) -> None:
    hub = layout_hub
    with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(SPAWN_TIMEOUT)
        result = client.run_notebook(json.dumps(NOTEBOOK), kernel_name="lsst")
    assert result.error is None
    executed = json.loads(result.notebook)
    assert "".join(executed["cells"][0]["outputs"][0]["text"]) == "bob\n"


def test_fast_spawn_failure_is_a_web_and_a_spawn_error(layout_hub: TestHub) -> None:
    # A spawn failing within a second fails POST hub/spawn with 500:
    # upstream raises NubladoWebError, this package a class that is both.
    hub = layout_hub
    start = datetime.datetime.now(tz=UTC)
    hub.set_spawn_behaviour("bob", fail=True)
    try:
        with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
            client.auth_to_hub()
            with pytest.raises(NubladoWebError) as info:
                client.spawn_lab(NubladoImageByClass())
    finally:
        hub.set_spawn_behaviour("bob")
    exc = info.value
    assert isinstance(exc, NubladoSpawnError)
    assert isinstance(exc, NubladoSpawnFormError)
    assert exc.status == 500
    assert exc.method == "POST"
    assert exc.url is not None
    assert exc.url.endswith("hub/spawn")
    # The hub's reason, in words; no HTML around it, nothing cut before it.
    assert "Testbed spawn failure for bob (requested by the test)" in str(exc)
    assert "<" not in str(exc)
    assert exc.log
    assert "Testbed spawn failure for bob" in exc.log[-1]
    assert exc.started_at is not None
    assert start <= exc.started_at <= exc.failed_at


def test_web_errors_carry_started_at(layout_hub: TestHub) -> None:
    hub = layout_hub
    start = datetime.datetime.now(tz=UTC)
    client = NubladoClient("alice", "not-a-valid-token", hub_url=hub.url)
    with client, pytest.raises(NubladoWebError) as info:
        client.auth_to_hub()
    exc = info.value
    assert exc.status in (401, 403)
    assert exc.started_at is not None
    assert start <= exc.started_at <= exc.failed_at
    assert "hub/" in (exc.url or "")
    report: Any = exc.to_sentry()
    assert report.tags["httpx_request_method"] == "GET"
    assert "started_at" in report.contexts["info"]


def test_lab_call_on_a_stopped_lab_is_ours(layout_hub: TestHub) -> None:
    # Without a lab, the implicit lab login fails with this package's error.
    hub = layout_hub
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        client.auth_to_hub()
        assert client.is_lab_stopped()
        with pytest.raises(NubladoError), client.lab_session():
            pass
        assert client.is_lab_stopped()


# Stopping a call from another thread (upstream: cancelling the task)


class _Call:
    """A blocking call in a thread of its own; keeps what it raised."""

    def __init__(self, target: Callable[[], Any]) -> None:
        self.error: Optional[BaseException] = None
        self.ended_at = 0.0
        self._target = target
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._target()
        except BaseException as e:
            self.error = e
        self.ended_at = time.monotonic()

    def join(self, timeout: float) -> Optional[BaseException]:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the cancelled call did not end"
        return self.error


# A cancelled call ends in well under a second; the margin is for slow machines.
CANCEL_MARGIN = 10.0


def test_cancel_code_in_flight(layout_hub: TestHub) -> None:
    hub = layout_hub
    client = NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url)
    client.auth_to_hub()
    client.spawn_lab(NubladoImageByClass())
    client.wait_for_spawn(SPAWN_TIMEOUT)
    started = threading.Event()

    def run() -> None:
        with client.lab_session() as session:
            session.execute(
                "print('started', flush=True)\nimport time\ntime.sleep(600)",
                on_output=lambda _: started.set(),
            )

    call = _Call(run)
    assert started.wait(60)
    cancelled_at = time.monotonic()
    client.cancel()
    error = call.join(60)
    assert isinstance(error, NubladoCancelledError), repr(error)
    assert call.ended_at - cancelled_at < CANCEL_MARGIN
    # The session was deleted on the way out, and its kernel with it.
    assert hub.lab_sessions("alice") == []
    kernels = hub.admin_request("GET", hub.lab_url("alice") + "api/kernels").json()
    assert kernels == []
    with pytest.raises(NubladoCancelledError):
        client.is_lab_stopped()
    client.close()


def test_cancel_run_notebook_in_flight(layout_hub: TestHub, tmp_path: Path) -> None:
    hub = layout_hub
    marker = tmp_path / "started"
    notebook = {
        **NOTEBOOK,
        "cells": [
            {
                **NOTEBOOK["cells"][0],  # type: ignore[index]
                "source": f"open({str(marker)!r}, 'w').close()\nimport time\ntime.sleep(600)",
            }
        ],
    }
    with NubladoClient("bob", hub.tokens["bob"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        client.wait_for_spawn(SPAWN_TIMEOUT)
        call = _Call(lambda: client.run_notebook(json.dumps(notebook), kernel_name="lsst"))
        # The lab runs on this machine: the cell's file says it has started.
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists()
        cancelled_at = time.monotonic()
        client.cancel()
        error = call.join(60)
        assert isinstance(error, NubladoCancelledError), repr(error)
        assert call.ended_at - cancelled_at < CANCEL_MARGIN


# Configuration kept in upstream's shapes and places


def test_spawn_from_upstream_image_shape(layout_hub: TestHub) -> None:
    # An image choice stored in upstream's (pydantic) shape, as YAML or
    # JSON configuration holds it, spawns the same form.
    hub = layout_hub
    stored = json.loads('{"image_class": "by-tag", "tag": "w_2026_40", "size": "Fine"}')
    with NubladoClient("alice", hub.tokens["alice"], hub_url=hub.url) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImage.from_dict(stored))
        client.wait_for_spawn(SPAWN_TIMEOUT)
    assert hub.spawn_forms("alice")[-1] == {"image_tag": ["w_2026_40"], "size": ["Fine"]}


def test_command_finds_the_token_where_rubin_keeps_it(hub: TestHub, tmp_path: Path) -> None:
    # Inside a Rubin lab the token is a mounted file; the command finds it
    # with no token setting of its own. (One host: the command runs in a
    # process of its own, where the test's subdomain names do not resolve.)
    secrets = tmp_path / "mounts" / "secrets"
    secrets.mkdir(parents=True)
    (secrets / "token").write_text(hub.tokens["bob"] + "\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUBLADO_")}
    env.pop("ACCESS_TOKEN", None)
    env.update(
        NUBLADO_USER="bob",
        NUBLADO_HUB_URL=hub.url,
        NUBLADO_RUNTIME_MOUNTS_DIR=str(tmp_path / "mounts"),
    )
    run = subprocess.run(
        [sys.executable, "-m", "nublado_sync", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "stopped"
    assert hub.tokens["bob"] not in run.stdout + run.stderr
