"""The whole hub flow completes when each kind of its requests meets a passing fault.

A front proxy of ours (`tests.fault_proxy`) before the real test hub answers
the first request of each kind with a 503 and ``Retry-After: 1``, or with a
connection reset, or passes it to the hub and drops the answer. The flow
(login, user record, spawn page and form, progress, lab login with its OAuth
hops, session creation, the kernel WebSocket, a cell, session delete, lab
stop) must complete with
one spawn and one session, and every fault must have been met.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from nublado_sync import NubladoClient, NubladoImageByClass

from ..fault_proxy import Rule, running_fault_proxy
from ..hub_testbed import TestHub
from .conftest import seconds

pytestmark = pytest.mark.integration

USER = "carol"

# Each kind of request of the flow, by method and path.
KINDS = [
    ("GET", r"^/hub/home"),
    ("GET", rf"^/hub/api/users/{USER}$"),
    ("GET", r"^/hub/spawn$"),
    ("POST", r"^/hub/spawn$"),
    ("GET", r"/server/progress$"),
    ("GET", rf"^/user/{USER}/lab"),
    ("GET", r"^/hub/api/oauth2/authorize"),
    ("GET", r"/oauth_callback"),
    ("POST", r"/api/sessions$"),
    # The first kernel WebSocket upgrade: refused or reset, then tried again.
    ("GET", r"/api/kernels/[^/]+/channels"),
    ("DELETE", r"/api/sessions/"),
    ("DELETE", rf"^/hub/api/users/{USER}/server$"),
]


@pytest.fixture(autouse=True)
def _lab_stopped(hub: TestHub) -> Iterator[None]:
    yield
    hub.stop_all()


def _rules(fault: str) -> list[Rule]:
    rules = []
    for method, path in KINDS:
        kind = fault
        if fault == "reset" and method == "POST":
            # The server made the spawn or the session; the answer is lost.
            kind = "lost"
        rules.append(Rule(method, path, kind))
    return rules


@pytest.mark.parametrize("fault", ["503", "reset"])
def test_flow_completes_through_passing_faults(hub: TestHub, fault: str) -> None:
    target = urlsplit(hub.url)
    assert target.hostname is not None
    assert target.port is not None
    rules = _rules(fault)
    forms = len(hub.spawn_forms(USER))
    with running_fault_proxy((target.hostname, target.port), rules) as proxy:
        with NubladoClient(USER, hub.tokens[USER], hub_url=proxy.url) as client:
            client.auth_to_hub()
            assert client.is_lab_stopped()
            client.spawn_lab(NubladoImageByClass())
            client.wait_for_spawn(seconds(120))
            client.auth_to_lab()
            with client.lab_session() as session:
                assert session.run_python("print(6 * 7)") == "42\n"
                assert len(hub.lab_sessions(USER)) == 1
            assert hub.lab_sessions(USER) == []
            client.stop_lab()
            client.wait_for_lab_stopped(seconds(60))
        unmet = [f"{r.method} {r.path}" for r in rules if not r.fired]
        assert unmet == [], f"faults never met: {unmet}; requests: {proxy.seen}"
    # One spawn, though the form's answer was lost in the reset case.
    assert len(hub.spawn_forms(USER)) == forms + 1
