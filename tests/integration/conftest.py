"""Fixtures: real Jupyter servers, started once per test session."""

from __future__ import annotations

import contextlib
import datetime
from typing import Any, Iterator

import pytest

from nublado_sync import JupyterLabSessionManager, open_lab_session

from .. import rubin_execution as rubin
from ..hub_testbed import TestHub, running_hub
from ..jupyter_servers import JupyterServer, running_jupyter_server

# Short keepalive and ping settings let the idle test run in seconds.
PING_INTERVAL = 1.0
PING_TIMEOUT = 2.0


@pytest.fixture(scope="session")
def stock_server() -> Iterator[JupyterServer]:
    """A stock jupyter_server with the IOPub rate limit off."""
    with running_jupyter_server() as server:
        yield server


@pytest.fixture(scope="session")
def documents_server() -> Iterator[JupyterServer]:
    """A jupyter_server with jupyter-server-documents, as Rubin labs run."""
    with running_jupyter_server(documents=True) as server:
        yield server


@pytest.fixture(params=["stock", "documents"])
def server(request: pytest.FixtureRequest) -> Iterator[JupyterServer]:
    """Each kind of server in turn; it must be left with no session or kernel."""
    server: JupyterServer = request.getfixturevalue(f"{request.param}_server")
    yield server
    leftovers = (server.sessions(), server.kernels())
    server.delete_all()
    assert leftovers == ([], []), "the test left sessions or kernels behind"


@pytest.fixture(scope="session")
def legacy_server() -> Iterator[JupyterServer]:
    """A stock server that refuses the v1 subprotocol."""
    with running_jupyter_server(legacy_protocol=True) as server:
        yield server


@pytest.fixture(scope="session")
def rate_limited_server() -> Iterator[JupyterServer]:
    """A stock server with its IOPub rate limit on, and low."""
    with running_jupyter_server(
        rate_limit=True,
        extra_args=[
            "--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=100000",
            "--ZMQChannelsWebsocketConnection.rate_limit_window=1.0",
        ],
    ) as server:
        yield server


@pytest.fixture(scope="session")
def short_ping_server() -> Iterator[JupyterServer]:
    """A stock server that closes WebSockets missing its pings for 2 s."""
    with running_jupyter_server(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT) as server:
        yield server


def lab(server: JupyterServer, **kwargs: Any) -> JupyterLabSessionManager:
    """Session manager for a test server with the test kernel."""
    kwargs.setdefault("kernel_name", "lsst")
    kwargs.setdefault("username", "tester")
    return open_lab_session(server.url, server.token, **kwargs)


@contextlib.contextmanager
def no_leftovers(server: JupyterServer) -> Iterator[None]:
    """Assert that the block leaves no session or kernel on the server."""
    yield
    assert server.sessions() == []
    assert server.kernels() == []


def seconds(value: float) -> datetime.timedelta:
    """Shorthand for a timedelta in seconds."""
    return datetime.timedelta(seconds=value)


@pytest.fixture(scope="session")
def rubin_lab_server() -> Iterator[JupyterServer]:
    """A stock server shaped like a Rubin lab: ``/user/alice/`` with ``rubin/execution``.

    A `NubladoClient` whose hub URL is the server's root finds its lab API
    at ``user/alice/``, and the server accepts the client's bearer token.
    """
    if not rubin.available():
        pytest.fail("rsp-jupyter-extensions is not installed; scripts/test installs it")
    with running_jupyter_server(
        rubin_execution=True, extra_args=["--ServerApp.base_url=/user/alice/"]
    ) as server:
        yield server


@pytest.fixture(scope="session")
def hub() -> Iterator[TestHub]:
    """A real JupyterHub that behaves like Nublado, with users alice, bob and carol."""
    with running_hub(users=("alice", "bob", "carol")) as hub:
        yield hub
