"""The hub client's HTTP behaviour against a misbehaving server of ours."""

from __future__ import annotations

import datetime
import json
import socket
import time
from typing import Any, Dict, Iterator

import pytest

from nublado_sync import (
    DiscoveryClient,
    NubladoClient,
    NubladoDiscoveryError,
    NubladoProtocolError,
    NubladoRedirectError,
    NubladoSpawnError,
    NubladoUsageError,
    NubladoWebError,
    RetryPolicy,
)

from ..rogue_http import Reply, RogueServer, running_rogue_server

TOKEN = "canary-token-5f3a9c"


@pytest.fixture
def rogue() -> Iterator[RogueServer]:
    with running_rogue_server() as server:
        yield server


def client(server: RogueServer, timeout: float = 5.0) -> NubladoClient:
    return NubladoClient(
        "alice", TOKEN, hub_url=server.url, timeout=datetime.timedelta(seconds=timeout)
    )


def assert_no_token(exc: BaseException) -> None:
    assert TOKEN not in str(exc)
    assert TOKEN not in repr(exc)
    assert TOKEN not in repr(exc.__dict__)


def test_login_sends_bearer_and_navigate(rogue: RogueServer) -> None:
    rogue.route("/hub/home", Reply(200, body=b"home"))
    with client(rogue) as c:
        c.auth_to_hub()
    seen = rogue.seen[0]
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.headers["Sec-Fetch-Mode"] == "navigate"
    assert TOKEN not in seen.path


def test_redirect_loop(rogue: RogueServer) -> None:
    rogue.redirect("/hub/home", "/hub/a")
    rogue.redirect("/hub/a", "/hub/home")
    with client(rogue) as c, pytest.raises(NubladoRedirectError) as info:
        c.auth_to_hub()
    assert str(info.value).startswith("Redirect loop: ")
    # Each URL may be seen twice (the OAuth round trip does that), not three times.
    assert rogue.paths().count("/hub/home") == 2
    assert_no_token(info.value)


def test_redirect_chain_without_loop_is_followed(rogue: RogueServer) -> None:
    rogue.redirect("/hub/home", "/hub/login?next=%2Fhub%2Fhome")
    rogue.redirect("/hub/login", "/hub/home2")
    rogue.route("/hub/home2", Reply(200))
    with client(rogue) as c:
        c.auth_to_hub()
    assert rogue.paths() == ["/hub/home", "/hub/login?next=%2Fhub%2Fhome", "/hub/home2"]


def test_redirect_outside_never_gets_the_token(rogue: RogueServer) -> None:
    with running_rogue_server() as elsewhere:
        rogue.redirect("/hub/home", f"{elsewhere.url}steal?state=s3cret")
        with client(rogue) as c, pytest.raises(NubladoRedirectError) as info:
            c.auth_to_hub()
        assert elsewhere.seen == []
    assert str(info.value).startswith("Unexpected redirect: ")
    assert "s3cret" not in str(info.value)


def test_redirect_to_other_path_on_same_host_is_refused() -> None:
    with running_rogue_server() as rogue:
        hub = rogue.url + "nb/"
        rogue.redirect("/nb/hub/home", "/not-the-hub/")
        with NubladoClient("alice", TOKEN, hub_url=hub) as c, pytest.raises(NubladoRedirectError):
            c.auth_to_hub()
        assert rogue.paths() == ["/nb/hub/home"]


@pytest.mark.parametrize("status", [401, 403, 500, 503])
def test_error_statuses(rogue: RogueServer, status: int) -> None:
    page = b'<html><script>var x = {xsrf_token: "XSRFSECRET"};</script>Nope</html>'
    rogue.route("/hub/home", Reply(status, {"Content-Type": "text/html"}, page))
    with client(rogue) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    exc = info.value
    assert exc.status == status
    assert exc.method == "GET"
    assert exc.url == f"{rogue.url}hub/home"
    assert str(exc).startswith(f"Status {status} from GET {rogue.url}hub/home")
    # The page's text, not the page (which stays in ``body``).
    assert str(exc).endswith("\nBody:\nNope")
    assert "<script>" in (exc.body or "")
    assert "XSRFSECRET" not in str(exc)
    assert_no_token(exc)


def test_connection_refused() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hub = f"http://127.0.0.1:{port}/"
    # Retrying is tested in test_retry; here, the error itself.
    off = RetryPolicy.off()
    with (
        NubladoClient("alice", TOKEN, hub_url=hub, retry=off) as c,
        pytest.raises(NubladoWebError) as info,
    ):
        c.auth_to_hub()
    assert str(info.value) == (
        f"Cannot connect to 127.0.0.1:{port}: connection refused (GET {hub}hub/home)"
    )
    assert_no_token(info.value)


def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    # Resolution fails inside this process: no query leaves the machine.
    def fail(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    hub = "http://hub.example.invalid/"
    off = RetryPolicy.off()
    with (
        NubladoClient("alice", TOKEN, hub_url=hub, retry=off) as c,
        pytest.raises(NubladoWebError) as info,
    ):
        c.auth_to_hub()
    assert str(info.value).startswith(
        "Cannot connect to hub.example.invalid: the host name does not resolve"
    )


def test_timeout_is_enforced(rogue: RogueServer) -> None:
    rogue.hang("/hub/home")
    start = time.monotonic()
    with client(rogue, timeout=1.0) as c, pytest.raises(NubladoWebError) as info:
        c.auth_to_hub()
    # The read timeout plus a generous 2 s margin.
    assert time.monotonic() - start < 1.0 + 2.0
    assert str(info.value).startswith(f"Read timeout: no answer from {rogue.url[7:-1]} within 1s")


def test_non_json_user_model(rogue: RogueServer) -> None:
    rogue.route("/hub/api/users/alice", Reply(200, {"Content-Type": "text/html"}, b"<html>"))
    with client(rogue) as c, pytest.raises(NubladoProtocolError):
        c.is_lab_stopped()


def test_progress_wrong_status_and_type(rogue: RogueServer) -> None:
    path = "/hub/api/users/alice/server/progress"
    rogue.route(path, Reply(400, body=b"not starting"))
    with client(rogue) as c, pytest.raises(NubladoWebError) as info:
        list(c.watch_spawn_progress())
    assert info.value.status == 400
    rogue.route(path, Reply(200, {"Content-Type": "application/json"}, b"{}"))
    with client(rogue) as c, pytest.raises(NubladoProtocolError):
        list(c.watch_spawn_progress())


def test_progress_stream_without_ready_is_a_spawn_error(rogue: RogueServer) -> None:
    events = b'data: {"progress": 50, "message": "halfway"}\n\n'
    rogue.route(
        "/hub/api/users/alice/server/progress",
        Reply(200, {"Content-Type": "text/event-stream"}, events),
    )
    with client(rogue) as c, pytest.raises(NubladoSpawnError) as info:
        c.wait_for_spawn()
    assert info.value.log == ["halfway"]
    assert str(info.value) == "halfway"


def test_endless_silent_progress_respects_wait_timeout(rogue: RogueServer) -> None:
    def trickle(handler: object) -> None:
        h = handler  # type: ignore[assignment]
        h.send_response(200)  # type: ignore[attr-defined]
        h.send_header("Content-Type", "text/event-stream")  # type: ignore[attr-defined]
        h.end_headers()  # type: ignore[attr-defined]
        h.wfile.write(b'data: {"progress": 1, "message": "starting"}\n\n')  # type: ignore[attr-defined]
        h.wfile.flush()  # type: ignore[attr-defined]
        rogue.release.wait()

    rogue.routes["/hub/api/users/alice/server/progress"] = trickle  # type: ignore[assignment]
    start = time.monotonic()
    with client(rogue, timeout=30) as c, pytest.raises(NubladoSpawnError) as info:
        c.wait_for_spawn(timeout=datetime.timedelta(seconds=1.5))
    assert time.monotonic() - start < 1.5 + 2.0
    assert info.value.log == ["starting"]


def test_bad_arguments() -> None:
    with pytest.raises(NubladoUsageError):
        NubladoClient("", TOKEN)
    with pytest.raises(NubladoUsageError):
        NubladoClient("alice", "")
    with pytest.raises(NubladoUsageError):
        NubladoClient("alice", TOKEN, hub_url="ftp://x/")
    c = NubladoClient("alice", TOKEN, hub_url="http://127.0.0.1:9/")
    with pytest.raises(NubladoUsageError):
        c.spawn_lab("recommended")  # type: ignore[arg-type]
    assert TOKEN not in repr(c)


def test_discovery(rogue: RogueServer, monkeypatch: pytest.MonkeyPatch) -> None:
    document = {"services": {"ui": {"nublado": {"url": f"{rogue.url}nb/"}}}}
    rogue.route(
        "/discovery",
        Reply(200, {"Content-Type": "application/json"}, json.dumps(document).encode()),
    )
    monkeypatch.setenv("REPERTOIRE_BASE_URL", rogue.url)
    c = NubladoClient("alice", TOKEN)
    assert c.hub_url == f"{rogue.url}nb/"
    # No token to the discovery service: it is unauthenticated.
    assert "Authorization" not in rogue.seen[0].headers


def test_discovery_errors(rogue: RogueServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPERTOIRE_BASE_URL", raising=False)
    with pytest.raises(NubladoDiscoveryError):
        NubladoClient("alice", TOKEN).hub_url  # noqa: B018
    rogue.route("/discovery", Reply(200, body=b'{"services": {"ui": {}}}'))
    with pytest.raises(NubladoDiscoveryError):
        DiscoveryClient(rogue.url).url_for_ui("nublado")
    rogue.route("/discovery", Reply(200, body=b"<html>"))
    with pytest.raises(NubladoDiscoveryError):
        DiscoveryClient(rogue.url).url_for_ui("nublado")
    rogue.route("/discovery", Reply(500))
    with pytest.raises(NubladoDiscoveryError):
        DiscoveryClient(rogue.url).url_for_ui("nublado")


def test_discovery_serves_stale_data_when_refresh_fails(rogue: RogueServer) -> None:
    document = {"services": {"ui": {"nublado": {"url": "https://nb.example.org"}}}}
    rogue.route("/discovery", Reply(200, body=json.dumps(document).encode()))
    discovery = DiscoveryClient(
        rogue.url, cache_time=datetime.timedelta(0), retry=RetryPolicy.off()
    )
    assert discovery.url_for_ui("nublado") == "https://nb.example.org"
    rogue.route("/discovery", Reply(503))
    assert discovery.url_for_ui("nublado") == "https://nb.example.org"
    assert len(rogue.seen) == 2


def test_discovery_retries_passing_failures(rogue: RogueServer) -> None:
    document = {"services": {"ui": {"nublado": {"url": "https://nb.example.org/"}}}}
    # A reset, then an ingress whose backend restarts, then the answer.
    rogue.flaky(
        "/discovery",
        [None, Reply(503, body=b"later")],
        lambda _: Reply(200, body=json.dumps(document).encode()),
    )
    fast = RetryPolicy(backoff=datetime.timedelta(milliseconds=50))
    assert DiscoveryClient(rogue.url, retry=fast).url_for_ui("nublado") == (
        "https://nb.example.org"
    )
    assert rogue.paths() == ["/discovery"] * 3


def test_discovery_follows_the_client_retry_policy(
    rogue: RogueServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rogue.flaky("/discovery", [Reply(503, body=b"later")], lambda _: Reply(200, body=b"{}"))
    monkeypatch.setenv("REPERTOIRE_BASE_URL", rogue.url)
    client = NubladoClient("alice", TOKEN, retry=RetryPolicy.off())
    with pytest.raises(NubladoDiscoveryError) as info:
        client.hub_url  # noqa: B018
    message = str(info.value)
    assert "status 503" in message, message
    assert "REPERTOIRE_BASE_URL" in message, message
    assert rogue.paths() == ["/discovery"]


def test_discovery_failure_names_the_setting() -> None:
    # Port 9 (discard) is closed here: the connection is refused.
    discovery = DiscoveryClient("http://127.0.0.1:9", retry=RetryPolicy.off())
    with pytest.raises(NubladoDiscoveryError) as info:
        discovery.url_for_ui("nublado")
    message = str(info.value)
    assert "refused" in message, message
    assert "check base_url" in message, message
    assert "Traceback" not in message, message
    assert "urllib3" not in message, message


@pytest.mark.parametrize(
    "arguments",
    [
        {"base_url": "ftp://discovery"},
        {"timeout": 0},
        {"timeout": True},
        {"timeout": "30"},
        {"cache_time": 300},
        {"cache_time": -datetime.timedelta(seconds=1)},
        {"retry": 3},
        {"proxies": {"https": "socks5://proxy:1080"}},
    ],
    ids=str,
)
def test_discovery_refuses_bad_arguments(arguments: Dict[str, Any]) -> None:
    with pytest.raises(NubladoUsageError):
        DiscoveryClient(**arguments)


def test_a_dead_proxy_is_named_not_the_server(rogue: RogueServer) -> None:
    # Port 9 is closed here: the proxy refuses, the hub would have answered.
    proxy = "http://proxyuser:proxy-secret-81@127.0.0.1:9"
    c = NubladoClient(
        "alice", TOKEN, hub_url=rogue.url, retry=RetryPolicy.off(), proxies={"http": proxy}
    )
    with pytest.raises(NubladoWebError) as info:
        c.is_lab_stopped()
    message = str(info.value)
    assert "the forward proxy 127.0.0.1:9: connection refused" in message, message
    assert "proxy-secret-81" not in message, message
    assert "proxyuser" not in message, message
    assert rogue.seen == []
