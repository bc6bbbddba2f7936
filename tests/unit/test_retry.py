"""Retries of requests that failed for a passing reason, against a server of ours."""

from __future__ import annotations

import datetime
import json
import socket
import time
from typing import Any, Iterator, Optional

import pytest

from nublado_sync import (
    JupyterLabSessionManager,
    NubladoClient,
    NubladoImageByClass,
    NubladoSpawnError,
    NubladoSpawnTimeoutError,
    NubladoUsageError,
    NubladoWebError,
    RetryPolicy,
    open_lab_session,
)

from ..log_capture import LogCapture
from ..rogue_http import Reply, RogueServer, reset, running_rogue_server

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
    assert policy.retries == 10
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


# Steps that change something: looked at before they are sent again

SPAWN = "/hub/spawn"
USER = "/hub/api/users/alice"
PROGRESS = "/hub/api/users/alice/server/progress"
JSON = {"Content-Type": "application/json"}


def _user(servers: dict) -> Reply:  # type: ignore[type-arg]
    return Reply(200, JSON, json.dumps({"name": "alice", "servers": servers}).encode())


def _spawn_routes(rogue: RogueServer, faults: list, running_after: bool) -> None:  # type: ignore[type-arg]
    """The spawn page; its form POST meets ``faults``, then is accepted."""
    rogue.flaky("/post", faults, lambda _: Reply(302, {"Location": "/hub/spawn-pending/alice"}))
    post = rogue.routes.pop("/post")

    def spawn(handler: Any) -> Optional[Reply]:
        if handler.command == "GET":
            return Reply(200, body=b"<form>")
        return post(handler)

    rogue.routes[SPAWN] = spawn
    rogue.route(USER, _user({"": {"pending": "spawn"}} if running_after else {}))


def _methods(rogue: RogueServer, path: str) -> list:  # type: ignore[type-arg]
    return [s.method for s in rogue.seen if s.path.split("?")[0] == path]


def test_spawn_form_answer_lost_but_spawn_started_is_not_sent_again(rogue: RogueServer) -> None:
    _spawn_routes(rogue, [RESET], running_after=True)
    with client(rogue) as c:
        c.spawn_lab(NubladoImageByClass())
    assert _methods(rogue, SPAWN) == ["GET", "POST"]
    assert _methods(rogue, USER) == ["GET"]


@pytest.mark.parametrize("fault", [RESET, UNAVAILABLE, Reply(502)], ids=["reset", "503", "502"])
def test_spawn_form_not_accepted_is_sent_again(rogue: RogueServer, fault: Optional[Reply]) -> None:
    _spawn_routes(rogue, [fault], running_after=False)
    with client(rogue) as c:
        c.spawn_lab(NubladoImageByClass())
    assert _methods(rogue, SPAWN) == ["GET", "POST", "GET", "POST"]
    assert _methods(rogue, USER) == ["GET"]


def test_spawn_form_503_that_persists_is_a_web_error(rogue: RogueServer) -> None:
    _spawn_routes(rogue, [UNAVAILABLE] * 100, running_after=False)
    start = time.monotonic()
    with client(rogue, timeout=2.0) as c, pytest.raises(NubladoWebError) as info:
        c.spawn_lab(NubladoImageByClass())
    assert not isinstance(info.value, NubladoSpawnError)
    assert info.value.status == 503
    # The policy's deadline (the HTTP timeout) for the retries, plus the
    # last try.
    assert time.monotonic() - start < 2 * 2.0 + MARGIN
    assert _methods(rogue, SPAWN).count("POST") > 1


def test_spawn_form_500_is_still_a_spawn_failure(rogue: RogueServer) -> None:
    _spawn_routes(rogue, [Reply(500, body=b"spawn failed")], running_after=False)
    with client(rogue) as c, pytest.raises(NubladoSpawnError):
        c.spawn_lab(NubladoImageByClass())
    assert _methods(rogue, SPAWN) == ["GET", "POST"]


def _lab(rogue: RogueServer) -> JupyterLabSessionManager:
    return open_lab_session(rogue.url, TOKEN, kernel_name="k", timeout=seconds(10))


def _lab_routes(rogue: RogueServer, faults: list, create: bool) -> list:  # type: ignore[type-arg]
    """A lab whose session POST meets ``faults`` (creating the session anyway if ``create``)."""
    sessions: list = []  # type: ignore[type-arg]
    posts: list = []  # type: ignore[type-arg]

    def make(handler: Any) -> dict:  # type: ignore[type-arg]
        body = json.loads(handler.body)
        model = {"id": f"s{len(sessions)}", "path": body["path"], "kernel": {"id": "k1"}}
        sessions.append(model)
        return model

    pending = list(faults)

    def api(handler: Any) -> Optional[Reply]:
        if handler.command == "GET":
            return Reply(200, JSON, json.dumps(sessions).encode())
        posts.append(1)
        if pending:
            fault = pending.pop(0)
            if create:
                make(handler)
            if fault is None:
                reset(handler)
                return None
            return fault
        return Reply(201, JSON, json.dumps(make(handler)).encode())

    def delete(handler: Any) -> Reply:
        sessions.clear()
        return Reply(204)

    rogue.routes["/api/sessions"] = api
    rogue.routes["/api/sessions/s0"] = delete
    rogue.routes["/api/sessions/s1"] = delete
    return sessions


def test_session_post_answer_lost_finds_the_session(rogue: RogueServer) -> None:
    sessions = _lab_routes(rogue, [RESET], create=True)
    manager = _lab(rogue)
    manager._api.create_session(kernel_name="k", notebook_name=None)
    assert len(sessions) == 1
    assert _methods(rogue, "/api/sessions") == ["POST", "GET"]


@pytest.mark.parametrize("fault", [RESET, UNAVAILABLE], ids=["reset", "503"])
def test_session_post_not_received_is_sent_again(
    rogue: RogueServer, fault: Optional[Reply]
) -> None:
    sessions = _lab_routes(rogue, [fault], create=False)
    manager = _lab(rogue)
    ids = manager._api.create_session(kernel_name="k", notebook_name=None)
    assert ids == ("s0", "k1")
    assert len(sessions) == 1
    assert _methods(rogue, "/api/sessions") == ["POST", "GET", "POST"]


# The spawn progress stream


READY = b'data: {"progress": 100, "ready": true, "message": "ready"}\n\n'
EVENTS = b'data: {"progress": 10, "message": "one"}\n\ndata: {"progress": 50, "message": "two"}\n\n'


def _broken_stream(handler: Any) -> None:
    """Two events, then the connection drops mid-stream (a hub restart)."""
    handler.send_response(200)
    handler.send_header("Content-Type", "text/event-stream")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    handler.wfile.write(b"%x\r\n%s\r\n" % (len(EVENTS), EVENTS))
    handler.wfile.flush()
    reset(handler)


def test_broken_progress_stream_is_opened_again(rogue: RogueServer) -> None:
    replay = EVENTS + b'data: {"progress": 90, "message": "three"}\n\n' + READY
    rogue.flaky(
        PROGRESS,
        [],
        lambda h: (
            _broken_stream(h)
            if len(rogue.paths()) == 1
            else Reply(200, {"Content-Type": "text/event-stream"}, replay)
        ),
    )
    seen: list = []  # type: ignore[type-arg]
    log = LogCapture()
    with client(rogue, log=log) as c:
        c.wait_for_spawn(seconds(30), on_progress=lambda m: seen.append(m.message))
    # Each event once, though the second stream replayed the first two.
    assert seen == ["one", "two", "three", "ready"]
    assert rogue.paths() == [PROGRESS, PROGRESS]
    assert any("Spawn progress stream broke" in line for line in log.lines)


def test_progress_of_a_spawn_the_restarted_hub_forgot(rogue: RogueServer) -> None:
    rogue.flaky(
        PROGRESS,
        [],
        lambda h: (
            _broken_stream(h)
            if len(rogue.paths()) == 1
            else Reply(400, JSON, b'{"status": 400, "message": "alice is not starting..."}')
        ),
    )
    with client(rogue) as c, pytest.raises(NubladoSpawnError) as info:
        c.wait_for_spawn(seconds(30))
    assert "restarted" in str(info.value)
    assert info.value.log == ["one", "two"]
    with client(rogue) as c, pytest.raises(NubladoWebError) as web:
        list(c.watch_spawn_progress())
    # A first stream answered 400 is the hub saying no spawn is going on.
    assert web.value.status == 400


def test_progress_reopening_ends_by_the_deadline(rogue: RogueServer) -> None:
    rogue.routes[PROGRESS] = _broken_stream  # type: ignore[assignment]
    start = time.monotonic()
    with client(rogue) as c, pytest.raises(NubladoSpawnTimeoutError):
        c.wait_for_spawn(seconds(3))
    assert time.monotonic() - start < 3 + MARGIN
    assert len(rogue.paths()) > 1


def test_proxy_without_routes_is_waited_out(rogue: RogueServer) -> None:
    # configurable-http-proxy just after a restart, before the hub gave it
    # its routes back: a bare "Not Found", no Content-Type.
    rogue.flaky("/hub/home", [Reply(404, body=b"Not Found")] * 2, lambda _: OK)
    with client(rogue) as c:
        c.auth_to_hub()
    assert rogue.paths() == ["/hub/home"] * 3


def test_a_real_404_is_not_retried(rogue: RogueServer) -> None:
    rogue.flaky(
        "/hub/home", [Reply(404, {"Content-Type": "text/html"}, b"Not Found")], lambda _: OK
    )
    with client(rogue) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    assert info.value.status == 404
    assert rogue.paths() == ["/hub/home"]
