"""Forward proxies: the REST calls and the kernel WebSocket take the same way.

Through proxy.py on 127.0.0.1 (`tests.forward_proxy`); its log shows what
went through it. Every address stays on this machine.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from nublado_sync import (
    DiscoveryClient,
    NubladoClient,
    NubladoDiscoveryError,
    NubladoUsageError,
    RetryPolicy,
    open_lab_session,
)

from ..forward_proxy import ForwardProxy, running_forward_proxy
from ..jupyter_servers import JupyterServer
from ..rogue_http import Reply, running_rogue_server

pytestmark = pytest.mark.integration

_PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(scope="module")
def forward_proxy() -> Iterator[ForwardProxy]:
    with running_forward_proxy() as proxy:
        yield proxy


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy variable from the machine, in either case."""
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    return monkeypatch


def _run(server: JupyterServer, env: pytest.MonkeyPatch, **kwargs: Any) -> None:
    with open_lab_session(server.url, server.token, kernel_name="lsst", **kwargs) as session:
        assert session.run_python("print(6 * 7)") == "42\n"
    # The test bed's own requests go direct.
    env.undo()
    assert server.sessions() == []
    assert server.kernels() == []


def _through(proxy: ForwardProxy, server: JupyterServer) -> tuple[str, str]:
    host = re.escape(server.url.split("//", 1)[1].rstrip("/"))
    # proxy.py logs "GET host:port/path" for a forwarded request and
    # "CONNECT host:port" for a tunnel.
    return rf"POST {host}/api/sessions", rf"CONNECT {host} "


def test_environment_proxy_carries_rest_and_websocket(
    stock_server: JupyterServer, forward_proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    # Upper case only: requests reads it, websocket-client would read only
    # the lower-case one first; both must agree anyway.
    clean_env.setenv("HTTP_PROXY", forward_proxy.url)
    before = forward_proxy.log()
    _run(stock_server, clean_env)
    rest, tunnel = _through(forward_proxy, stock_server)
    assert forward_proxy.wait_for(tunnel), forward_proxy.log()[len(before) :]
    # One line per connection, naming its first request: the session's
    # creation opened it.
    new = forward_proxy.log()[len(before) :]
    assert re.search(rest, new), new


def test_no_proxy_exempts_rest_and_websocket(
    stock_server: JupyterServer, forward_proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("HTTP_PROXY", forward_proxy.url)
    clean_env.setenv("http_proxy", forward_proxy.url)
    # An empty lower-case no_proxy: requests goes on to NO_PROXY,
    # websocket-client on its own stops at the empty one and would tunnel
    # the WebSocket through the proxy.
    clean_env.setenv("no_proxy", "")
    clean_env.setenv("NO_PROXY", "127.0.0.1")
    before = forward_proxy.log()
    _run(stock_server, clean_env)
    # A request of the test's own through the proxy, once logged, shows the
    # log has caught up with the client's connections.
    marker = f"{stock_server.url}marker-{uuid.uuid4().hex}"
    with requests.Session() as direct:
        direct.trust_env = False
        direct.get(marker, proxies={"http": forward_proxy.url}, timeout=30).close()
    assert forward_proxy.wait_for(re.escape(marker.split("//", 1)[1]))
    new = forward_proxy.log()[len(before) :]
    rest, tunnel = _through(forward_proxy, stock_server)
    assert not re.search(rest, new), new
    assert not re.search(tunnel, new), new


def test_explicit_proxies_replace_the_environment(
    stock_server: JupyterServer, forward_proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    # The environment names a proxy that does not exist; the explicit
    # setting wins, for the WebSocket too.
    clean_env.setenv("http_proxy", "http://127.0.0.1:9")
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    before = forward_proxy.log()
    _run(stock_server, clean_env, proxies={"http": forward_proxy.url})
    rest, tunnel = _through(forward_proxy, stock_server)
    assert forward_proxy.wait_for(tunnel), forward_proxy.log()[len(before) :]
    assert re.search(rest, forward_proxy.log()[len(before) :])


def test_empty_proxies_mean_direct(
    stock_server: JupyterServer, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("http_proxy", "http://127.0.0.1:9")
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    _run(stock_server, clean_env, proxies={})


@pytest.mark.parametrize(
    "proxies", [["http://p"], {"http": "socks5://p:1080"}, {"http": 3128}], ids=str
)
def test_bad_proxies_are_refused(proxies: Any) -> None:
    with pytest.raises(NubladoUsageError):
        open_lab_session("http://127.0.0.1:9/", "token-of-tests", proxies=proxies)
    with pytest.raises(NubladoUsageError):
        NubladoClient("alice", "token-of-tests", hub_url="http://127.0.0.1:9/", proxies=proxies)


def test_service_discovery_takes_the_client_proxy(
    forward_proxy: ForwardProxy, clean_env: pytest.MonkeyPatch
) -> None:
    # The environment names a proxy that does not exist: a discovery that
    # ignored the client's proxies would fail.
    clean_env.setenv("http_proxy", "http://127.0.0.1:9")
    clean_env.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    with running_rogue_server() as discovery:
        document = {"services": {"ui": {"nublado": {"url": f"{discovery.url}nb"}}}}
        discovery.route("/discovery", Reply(200, body=json.dumps(document).encode()))
        clean_env.setenv("REPERTOIRE_BASE_URL", discovery.url)
        before = forward_proxy.log()
        client = NubladoClient("alice", "token-of-tests", proxies={"http": forward_proxy.url})
        assert client.hub_url == f"{discovery.url}nb/"
        host = re.escape(discovery.url.split("//", 1)[1].rstrip("/"))
        assert forward_proxy.wait_for(rf"GET {host}/discovery"), forward_proxy.log()[len(before) :]
        # A DiscoveryClient of one's own follows the environment, here a
        # dead proxy, and says so in words.
        with pytest.raises(NubladoDiscoveryError) as info:
            DiscoveryClient(retry=RetryPolicy.off()).url_for_ui("nublado")
        assert "proxy" in str(info.value), info.value
