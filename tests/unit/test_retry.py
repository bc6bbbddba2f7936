"""Retries of requests that failed for a passing reason, against a server of ours."""

from __future__ import annotations

import datetime
import json
import socket
import time
from typing import Iterator, Optional

import pytest

from nublado_sync import NubladoClient, NubladoUsageError, NubladoWebError, RetryPolicy

from ..log_capture import LogCapture
from ..rogue_http import Reply, RogueServer, running_rogue_server

TOKEN = "canary-token-retry-7d2e"

OK = Reply(200, {"Content-Type": "text/html"}, b"home")
UNAVAILABLE = Reply(503, {"Retry-After": "1"}, b"ingress says later")
RESET: Optional[Reply] = None

MARGIN = 2.0
"""Seconds a call may run past its deadline (a loaded test machine)."""


def seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=value)


@pytest.fixture
def rogue() -> Iterator[RogueServer]:
    with running_rogue_server() as server:
        yield server


def client(
    server: RogueServer,
    *,
    timeout: float = 10.0,
    retry: Optional[RetryPolicy] = None,
    log: Optional[LogCapture] = None,
) -> NubladoClient:
    return NubladoClient(
        "alice",
        TOKEN,
        hub_url=server.url,
        timeout=seconds(timeout),
        retry=retry,
        logger=log.logger() if log else None,
    )


# The policy value


def test_policy_defaults_and_pauses() -> None:
    policy = RetryPolicy()
    assert policy.retries == 8
    assert policy.deadline is None
    for retry in range(1, 12):
        base = min(0.5 * 2 ** (retry - 1), 8.0)
        pause = policy.pause(retry)
        assert base / 2 <= pause <= base
    still = RetryPolicy(jitter=0, backoff=seconds(1), max_backoff=seconds(3))
    assert [still.pause(n) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]
    assert still.request_deadline(7.0) == 7.0
    assert RetryPolicy(deadline=seconds(60)).request_deadline(7.0) == 60.0
    assert RetryPolicy.off().retries == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"retries": -1},
        {"retries": 1.5},
        {"retries": True},
        {"backoff": 1},
        {"max_backoff": seconds(-1)},
        {"jitter": 2},
        {"jitter": "x"},
        {"deadline": seconds(0)},
        {"deadline": 30},
    ],
)
def test_policy_refuses_bad_values(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(NubladoUsageError):
        RetryPolicy(**kwargs)


def test_client_refuses_a_retry_that_is_not_a_policy() -> None:
    with pytest.raises(NubladoUsageError):
        NubladoClient("alice", TOKEN, hub_url="http://127.0.0.1:9/", retry=3)  # type: ignore[arg-type]


def test_policy_is_immutable() -> None:
    policy = RetryPolicy()
    with pytest.raises(AttributeError):
        policy.retries = 2  # type: ignore[misc]


# Idempotent requests ride through


def test_503_with_retry_after_is_waited_out(rogue: RogueServer) -> None:
    rogue.flaky("/hub/home", [UNAVAILABLE, UNAVAILABLE], lambda _: OK)
    log = LogCapture()
    start = time.monotonic()
    with client(rogue, log=log) as c:
        c.auth_to_hub()
    elapsed = time.monotonic() - start
    assert rogue.paths() == ["/hub/home"] * 3
    # Retry-After: 1, twice, and honoured rather than the shorter backoff.
    assert elapsed >= 2.0
    retries = [json.loads(line) for line in log.lines if "Retrying HTTP request" in line]
    assert [r["retry"] for r in retries] == [1, 2]
    assert all(r["reason"] == "status 503" and r["method"] == "GET" for r in retries)
    assert all(r["pause"] == 1 for r in retries)
    assert not any(TOKEN in line for line in log.lines)


@pytest.mark.parametrize("status", [502, 503, 504])
def test_gateway_errors_are_retried(rogue: RogueServer, status: int) -> None:
    rogue.flaky("/hub/home", [Reply(status, body=b"gateway")], lambda _: OK)
    with client(rogue) as c:
        c.auth_to_hub()
    assert rogue.paths() == ["/hub/home"] * 2


def test_connection_reset_is_retried(rogue: RogueServer) -> None:
    log = LogCapture()
    rogue.flaky("/hub/home", [RESET, RESET], lambda _: OK)
    with client(rogue, log=log) as c:
        c.auth_to_hub()
    assert rogue.paths() == ["/hub/home"] * 3
    retries = [json.loads(line) for line in log.lines if "Retrying HTTP request" in line]
    assert len(retries) == 2
    assert all("closed the connection without a complete answer" in r["reason"] for r in retries)


def test_delete_is_retried(rogue: RogueServer) -> None:
    rogue.route(
        "/hub/api/users/alice",
        Reply(200, {"Content-Type": "application/json"}, b'{"servers": {"": {}}}'),
    )
    rogue.flaky("/hub/api/users/alice/server", [RESET, UNAVAILABLE], lambda _: Reply(202))
    with client(rogue) as c:
        c.stop_lab()
    assert [s.method for s in rogue.seen] == ["GET", "DELETE", "DELETE", "DELETE"]


def test_other_statuses_are_not_retried(rogue: RogueServer) -> None:
    rogue.route("/hub/home", Reply(500, body=b"broken"))
    with client(rogue) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    assert info.value.status == 500
    assert rogue.paths() == ["/hub/home"]


def test_redirects_are_left_to_the_client(rogue: RogueServer) -> None:
    # urllib3 must not follow (or count) them: fetch follows them by hand,
    # inside the URL space.
    rogue.redirect("/hub/home", "/hub/login")
    rogue.flaky("/hub/login", [UNAVAILABLE], lambda _: OK)
    with client(rogue) as c:
        c.auth_to_hub()
    assert rogue.paths() == ["/hub/home", "/hub/login", "/hub/login"]


def test_retry_off_fails_at_once(rogue: RogueServer) -> None:
    rogue.flaky("/hub/home", [UNAVAILABLE], lambda _: OK)
    with client(rogue, retry=RetryPolicy.off()) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    assert info.value.status == 503
    assert rogue.paths() == ["/hub/home"]


# Deadlines hold


def test_persistent_503_ends_by_the_timeout(rogue: RogueServer) -> None:
    rogue.route("/hub/home", Reply(503, body=b"down"))
    start = time.monotonic()
    with client(rogue, timeout=2.0) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    assert time.monotonic() - start < 2.0 + MARGIN
    assert info.value.status == 503
    assert len(rogue.paths()) > 1


def test_policy_deadline_bounds_the_retries(rogue: RogueServer) -> None:
    rogue.route("/hub/home", Reply(503, body=b"down"))
    policy = RetryPolicy(deadline=seconds(1.5), retries=100, backoff=seconds(0.1))
    start = time.monotonic()
    with client(rogue, timeout=30, retry=policy) as c, pytest.raises(NubladoWebError):
        c.auth_to_hub()
    assert time.monotonic() - start < 1.5 + MARGIN
    assert len(rogue.paths()) > 2


def test_retry_after_past_the_deadline_is_not_waited(rogue: RogueServer) -> None:
    rogue.route("/hub/home", Reply(503, {"Retry-After": "120"}, b"later"))
    start = time.monotonic()
    with client(rogue, timeout=5.0) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    assert time.monotonic() - start < MARGIN
    assert info.value.status == 503
    assert rogue.paths() == ["/hub/home"]


def test_retried_answer_with_an_endless_body_does_not_hold_the_retry(
    rogue: RogueServer,
) -> None:
    first = True

    def answer(handler: object) -> Optional[Reply]:
        nonlocal first
        if first:
            first = False
            rogue.routes["/hub/home"] = lambda _: OK
            trickle(handler)
            return None
        return OK

    rogue.endless("/hub/home", status=503)
    trickle = rogue.routes["/hub/home"]
    rogue.routes["/hub/home"] = answer
    start = time.monotonic()
    with client(rogue, timeout=3.0) as c:
        c.auth_to_hub()
    assert time.monotonic() - start < 3.0 + MARGIN
    assert rogue.paths() == ["/hub/home"] * 2


def test_connection_refused_is_retried_until_the_timeout() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = LogCapture()
    start = time.monotonic()
    with (
        NubladoClient(
            "alice",
            TOKEN,
            hub_url=f"http://127.0.0.1:{port}/",
            timeout=seconds(2),
            logger=log.logger(),
        ) as c,
        pytest.raises(NubladoWebError) as info,
    ):
        c.auth_to_hub()
    assert time.monotonic() - start < 2.0 + MARGIN
    assert "ConnectionError" in str(info.value) or "refused" in str(info.value).lower()
    retries = [line for line in log.lines if "Retrying HTTP request" in line]
    assert len(retries) >= 2
