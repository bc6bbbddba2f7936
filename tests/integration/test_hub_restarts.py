"""The hub restarted under the client: between login and spawn, and during a spawn.

A hub of this module's own (`tests.hub_testbed`), stopped with SIGTERM as a
deployment's restart does and started again on the same ports and state.
The hub stops its proxy on the way out (connections are then refused) and,
with ``cleanup_servers`` as in the test bed, every lab and spawn.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator

import pytest

from nublado_sync import (
    NubladoClient,
    NubladoImageByClass,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    RetryPolicy,
)

from ..hub_testbed import TestHub, running_hub
from ..log_capture import LogCapture
from .conftest import seconds

pytestmark = pytest.mark.integration

SPAWN_TIMEOUT = seconds(120)

# A hub takes from a few seconds to half a minute (a loaded machine) to
# start: each request may keep retrying for two minutes.
OUTLASTS_A_RESTART = RetryPolicy(retries=40, deadline=seconds(120))


# What each test measured, written out when NUBLADO_RELIABILITY_REPORT
# names a file (docs/reliability.rst quotes it).
TIMES: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def _report() -> Iterator[None]:
    yield
    path = os.environ.get("NUBLADO_RELIABILITY_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"hub_restarts": TIMES}) + "\n")


@pytest.fixture(scope="module")
def hub() -> Iterator[TestHub]:
    with running_hub(users=("alice", "bob")) as hub:
        yield hub


@pytest.fixture(autouse=True)
def _labs_stopped(hub: TestHub) -> Iterator[None]:
    yield
    hub.set_spawn_behaviour("bob", delay=0)
    hub.stop_all()


def test_hub_restarted_between_login_and_spawn(hub: TestHub) -> None:
    log = LogCapture()
    with NubladoClient(
        "alice",
        hub.tokens["alice"],
        hub_url=hub.url,
        retry=OUTLASTS_A_RESTART,
        logger=log.logger(),
    ) as client:
        client.auth_to_hub()
        assert client.is_lab_stopped()
        hub.stop_hub()
        down = time.monotonic()
        back: list[float] = []

        def start() -> None:
            hub.start_hub()
            back.append(time.monotonic())

        # The client asks while the hub is down, and comes back with it.
        starter = threading.Thread(target=start, name="test-hub-restart")
        starter.start()
        try:
            client.spawn_lab(NubladoImageByClass())
        finally:
            starter.join()
        TIMES["hub_down"] = back[0] - down
        TIMES["spawn_accepted_after_hub_back"] = time.monotonic() - back[0]
        client.wait_for_spawn(SPAWN_TIMEOUT)
        assert not client.is_lab_stopped()
        client.auth_to_lab()
        with client.lab_session() as session:
            assert session.run_python("print(6 * 7)") == "42\n"
    # Sent once: the retries were of the requests that change nothing.
    assert len(hub.spawn_forms("alice")) == 1
    assert any("Retrying HTTP request" in line for line in log.lines)
    assert not any(hub.tokens["alice"] in line for line in log.lines)


def test_hub_restarted_during_wait_for_spawn(hub: TestHub) -> None:
    # A slow spawn (a progress event each second), which the restart kills.
    hub.set_spawn_behaviour("bob", delay=30)
    started = threading.Event()
    log = LogCapture()

    def restart() -> None:
        if started.wait(60):
            hub.stop_hub()
            hub.start_hub()
            TIMES["back_after_restart"] = time.monotonic()

    with NubladoClient(
        "bob", hub.tokens["bob"], hub_url=hub.url, retry=OUTLASTS_A_RESTART, logger=log.logger()
    ) as client:
        client.auth_to_hub()
        client.spawn_lab(NubladoImageByClass())
        restarter = threading.Thread(target=restart, name="test-hub-restart")
        restarter.start()
        try:
            with pytest.raises(NubladoSpawnError) as info:
                client.wait_for_spawn(SPAWN_TIMEOUT, on_progress=lambda _: started.set())
        finally:
            started.set()
            restarter.join()
        TIMES["spawn_gone_reported_after_hub_back"] = time.monotonic() - TIMES.pop(
            "back_after_restart"
        )
        assert started.is_set()
        # Reported as what it is, well before the timeout.
        assert not isinstance(info.value, NubladoSpawnTimeoutError)
        assert "restarted" in str(info.value), str(info.value)
        assert info.value.log, "the progress before the restart is kept"
        assert client.is_lab_stopped()
    assert any("Spawn progress stream broke" in line for line in log.lines)
