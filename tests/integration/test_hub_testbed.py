"""Prove the JupyterHub test bed by speaking raw HTTP to it.

The requests here are those a Nublado client makes (see the project's
reference on the hub flow): redirects followed by hand with the token on
every hop, ``Set-Cookie`` read on every hop, ``Sec-Fetch-Mode: navigate`` on
page loads and ``same-origin`` otherwise, ``X-XSRFToken`` once known.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
import requests

from ..hub_testbed import TestHub, resolve_localhost_subdomains, running_hub

pytestmark = pytest.mark.integration

TIMEOUT = 30.0


@dataclass
class Hop:
    """One request of a redirect chain."""

    method: str
    url: str
    status: int
    set_cookies: dict[str, str] = field(default_factory=dict)


class Client:
    """A minimal Nublado-style HTTP client for one user.

    Parameters
    ----------
    hub
        The test hub.
    user
        The user, whose token goes on every request.
    """

    def __init__(self, hub: TestHub, user: str) -> None:
        self.hub = hub
        self.user = user
        self.http = requests.Session()
        self.hub_xsrf: str | None = None
        self.lab_xsrf: str | None = None
        self.lab_url = hub.lab_url(user)

    def close(self) -> None:
        self.http.close()

    def _headers(self, url: str, navigate: bool) -> dict[str, str]:
        headers = {
            "Authorization": f"Bearer {self.hub.tokens[self.user]}",
            "Sec-Fetch-Mode": "navigate" if navigate else "same-origin",
        }
        xsrf = self.lab_xsrf if url.startswith(self.lab_url) else self.hub_xsrf
        if not navigate and xsrf:
            headers["X-XSRFToken"] = xsrf
        return headers

    def _note_cookies(self, response: requests.Response) -> dict[str, str]:
        """Record the XSRF token a response sets, hub or lab by its URL."""
        cookies = {}
        for cookie in response.cookies:
            cookies[cookie.name] = cookie.path or ""
            if cookie.name != "_xsrf":
                continue
            if urlsplit(response.url).path.startswith("/hub/"):
                assert cookie.path == "/hub/"
                self.hub_xsrf = cookie.value
            else:
                assert cookie.path == f"/user/{self.user}/"
                self.lab_xsrf = cookie.value
        return cookies

    def request(
        self, method: str, url: str, *, navigate: bool = False, **kw: Any
    ) -> tuple[requests.Response, list[Hop]]:
        """Make a request, following redirects by hand.

        Returns
        -------
        tuple
            The final response and every hop (the final one included).
        """
        hops: list[Hop] = []
        seen: dict[str, int] = {}
        while True:
            assert url.startswith((self.hub.url, self.lab_url)), f"redirected away to {url}"
            seen[url] = seen.get(url, 0) + 1
            # The OAuth round trip comes back to where it started, once.
            assert seen[url] <= 2, f"redirect loop at {url}: {hops}"
            response = self.http.request(
                method,
                url,
                headers=self._headers(url, navigate),
                allow_redirects=False,
                timeout=TIMEOUT,
                **kw,
            )
            hops.append(Hop(method, url, response.status_code, self._note_cookies(response)))
            if response.status_code not in (301, 302, 303, 307, 308):
                return response, hops
            url = urljoin(url, response.headers["Location"])
            if response.status_code in (301, 302, 303):
                method, kw = "GET", {}

    def login(self) -> list[Hop]:
        response, hops = self.request("GET", self.hub.url + "hub/home", navigate=True)
        assert response.status_code == 200, hops
        return hops

    def spawn(self, **form: str) -> tuple[requests.Response, list[Hop]]:
        assert self.hub_xsrf
        return self.request("POST", self.hub.url + "hub/spawn", data=form)

    def progress(self) -> Iterator[dict[str, Any]]:
        """Yield the spawn progress events (server-sent events)."""
        url = f"{self.hub.url}hub/api/users/{self.user}/server/progress"
        headers = self._headers(url, navigate=False)
        headers["Referer"] = self.hub.url + "hub/home"
        with self.http.get(url, headers=headers, stream=True, timeout=TIMEOUT) as response:
            assert response.status_code == 200, response.text
            assert response.headers["Content-Type"].startswith("text/event-stream")
            for line in response.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    yield json.loads(line[len("data:") :])

    def lab_login(self) -> list[Hop]:
        response, hops = self.request("GET", self.hub.url + f"user/{self.user}/lab", navigate=True)
        assert response.status_code == 200, hops
        return hops


@contextlib.contextmanager
def client(hub: TestHub, user: str) -> Iterator[Client]:
    """A client for a user, closed afterwards."""
    result = Client(hub, user)
    try:
        yield result
    finally:
        result.close()


def nublado_flow(hub: TestHub, user: str) -> Client:
    """Log in, spawn a lab, log in to it and start a session.

    Returns
    -------
    Client
        The client, with both XSRF tokens and a running lab.
    """
    web = Client(hub, user)
    hops = web.login()
    # hub/home -> hub/login -> hub/bearer/login (sets the cookies) -> hub/home
    assert [urlsplit(hop.url).path for hop in hops] == [
        "/hub/home",
        "/hub/login",
        "/hub/bearer/login",
        "/hub/home",
    ]
    assert hops[2].set_cookies == {
        "jupyterhub-session-id": "/",
        "jupyterhub-hub-login": "/hub/",
        "_xsrf": "/hub/",
    }
    assert web.hub_xsrf

    response, _ = web.request("GET", hub.url + "hub/spawn", navigate=True)
    assert response.status_code == 200
    for name in ("image_list", "image_tag", "image_class", "size", "enable_debug"):
        assert f'name="{name}"' in response.text

    response, hops = web.spawn(image_class="recommended", size="Large")
    assert response.status_code == 200, hops
    assert [hop.status for hop in hops] == [302, 200]
    assert urlsplit(hops[1].url).path == f"/hub/spawn-pending/{user}"

    events = list(web.progress())
    assert events[-1]["ready"] is True, events
    assert events[-1]["url"].rstrip("/").endswith(f"/user/{user}")
    assert all("progress" in event for event in events)

    expected = {"image_class": ["recommended"], "size": ["Large"]}
    assert hub.spawn_forms(user) == [expected]
    server = hub.user_model(user)["servers"][""]
    assert server["ready"] is True
    assert server["user_options"] == expected

    hops = web.lab_login()
    lab_host = urlsplit(web.lab_url).netloc
    if hub.api_token_login:
        # The lab takes the token itself: no OAuth round trip, and the lab
        # XSRF cookie comes with the page.
        assert [hop.status for hop in hops][-1:] == [200]
        assert hops[-1].set_cookies == {"_xsrf": f"/user/{user}/"}
    else:
        paths = [urlsplit(hop.url).path for hop in hops]
        assert "/hub/api/oauth2/authorize" in paths
        callback = hops[paths.index(f"/user/{user}/oauth_callback")]
        assert urlsplit(callback.url).netloc == lab_host
        assert callback.set_cookies[f"jupyterhub-user-{user}"] == f"/user/{user}/"
        assert callback.set_cookies["_xsrf"] == f"/user/{user}/"
    assert urlsplit(hops[-1].url).netloc == lab_host
    assert web.lab_xsrf
    assert web.lab_xsrf != web.hub_xsrf

    body = {"kernel": {"name": "lsst"}, "path": uuid.uuid4().hex, "type": "console"}
    response, hops = web.request("POST", web.lab_url + "api/sessions", json=body)
    assert response.status_code == 201, hops
    session = response.json()
    assert session["kernel"]["name"] == "lsst"
    assert [s["id"] for s in hub.lab_sessions(user)] == [session["id"]]
    return web


def loopback_only(hub: TestHub) -> None:
    """Assert that no process of the hub talks beyond 127.0.0.1."""
    for proc in hub.processes():
        with contextlib.suppress(psutil.NoSuchProcess):
            for conn in proc.net_connections(kind="inet"):
                assert conn.laddr.ip == "127.0.0.1", (proc, conn)
                if conn.raddr:
                    assert conn.raddr.ip == "127.0.0.1", (proc, conn)


@pytest.fixture(scope="module")
def plain_hub() -> Iterator[TestHub]:
    """A hub without subdomains, labs without the documents extension."""
    with running_hub() as hub:
        yield hub


@pytest.fixture
def hub(plain_hub: TestHub) -> Iterator[TestHub]:
    """The plain hub, left with no server and default spawn behaviour."""
    yield plain_hub
    for user in plain_hub.users:
        plain_hub.set_spawn_behaviour(user)
    plain_hub.stop_all()


def test_flow(hub: TestHub) -> None:
    web = nublado_flow(hub, "alice")
    try:
        assert "jupyter_server_documents | extension was successfully loaded" not in hub.log()
        loopback_only(hub)
        assert len(hub.processes("alice")) == 2  # The lab and its kernel.
        # Stopping: the lab then answers through the hub, not as a lab.
        assert hub.stop_all() < 10
        assert hub.user_model("alice")["servers"] == {}
        assert hub.processes("alice") == []
        response, _ = web.request("GET", web.lab_url + "api/sessions")
        assert response.status_code == 424
    finally:
        web.close()


def test_tokens(hub: TestHub) -> None:
    url = hub.url + "hub/home"
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 403),
        ({"Authorization": f"bEaReR {hub.tokens['bob']}"}, 200),
    ]:
        response = requests.get(url, headers=headers, timeout=TIMEOUT)
        assert response.status_code == status
    # Without api_token_login the token is no hub API token.
    response = requests.get(
        hub.url + "hub/api/users/bob",
        headers={"Authorization": f"Bearer {hub.tokens['bob']}"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 403


def test_failing_spawn(hub: TestHub) -> None:
    with client(hub, "bob") as web:
        web.login()
        # A spawn failing within a second fails the form POST itself.
        hub.set_spawn_behaviour("bob", fail=True)
        response, _ = web.spawn(image_class="latest-weekly", size="Small")
        assert response.status_code == 500
        events = list(web.progress())
        assert events == [{"progress": 100, "failed": True, "message": events[0]["message"]}]
        assert "Testbed spawn failure" in events[0]["message"]
        # A later failure: the POST redirects to spawn-pending first.
        hub.set_spawn_behaviour("bob", fail=True, delay=2.5)
        response, hops = web.spawn(image_tag="w_2025_01", enable_debug="true")
        assert response.status_code == 200, hops
        events = list(web.progress())
        assert events[-1]["failed"] is True
        assert "Testbed spawn failure" in events[-1]["message"]
        assert any("slow spawn" in event["message"] for event in events)
        assert hub.user_model("bob")["servers"] == {}
        assert hub.spawn_forms("bob")[-2:] == [
            {"image_class": ["latest-weekly"], "size": ["Small"]},
            {"image_tag": ["w_2025_01"], "enable_debug": ["true"]},
        ]


def test_slow_spawn_is_stopped(hub: TestHub) -> None:
    with client(hub, "bob") as web:
        web.login()
        hub.set_spawn_behaviour("bob", delay=60)
        web.spawn(image_class="recommended", size="Large")
        started = time.monotonic()
        # Progress keeps coming while the spawn waits.
        for event in web.progress():
            if "slow spawn" in event["message"]:
                break
        assert time.monotonic() - started < 5
        assert hub.user_model("bob")["servers"][""]["pending"] == "spawn"
        assert hub.stop_all() < 10
        assert hub.user_model("bob")["servers"] == {}


def test_subdomains() -> None:
    with running_hub(subdomains=True) as hub, resolve_localhost_subdomains():
        assert hub.subdomain_host is not None
        assert hub.url == hub.subdomain_host + "/"
        lab_host = urlsplit(hub.lab_url("alice")).netloc
        assert lab_host.startswith("alice.hub.localhost:")
        web = nublado_flow(hub, "alice")
        try:
            loopback_only(hub)
        finally:
            web.close()


def test_api_token_login_and_documents() -> None:
    with running_hub(api_token_login=True, documents=True) as hub:
        token = {"Authorization": f"Bearer {hub.tokens['alice']}"}
        # The token alone, without cookies or XSRF, works on the hub API.
        response = requests.get(hub.url + "hub/api/users/alice", headers=token, timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.json()["name"] == "alice"
        web = nublado_flow(hub, "alice")
        try:
            response = requests.get(
                web.lab_url + "api/sessions", headers=token, timeout=TIMEOUT, allow_redirects=False
            )
            assert response.status_code == 200
            assert len(response.json()) == 1
            assert "jupyter_server_documents | extension was successfully loaded" in hub.log()
        finally:
            web.close()


def test_teardown_leaves_nothing() -> None:
    with running_hub(users=("carol",), api_token_login=True) as hub:
        state_dir = hub.state_dir
        assert (state_dir / "jupyterhub_config.py").exists()
        response = hub.admin_request("POST", hub.url + "hub/api/users/carol/server")
        assert response.status_code == 201, response.text
        body = {"kernel": {"name": "lsst"}, "path": "x", "type": "console"}
        response = hub.admin_request("POST", hub.lab_url("carol") + "api/sessions", json=body)
        assert response.status_code == 201, response.text
        # The hub, the proxy, the lab and its kernel.
        assert len(hub.processes()) == 4
    assert hub.processes() == []
    assert not state_dir.exists()
