"""Tests of the test-server helper `jupyter_servers` against real servers."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import select
import signal
import struct
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
import websocket

from ..jupyter_servers import JupyterServer, running_jupyter_server

pytestmark = pytest.mark.integration

V1 = "v1.kernel.websocket.jupyter.org"
"""The kernel WebSocket subprotocol of jupyter_server."""


# Servers are slow enough to start (about 0.5 s) that each configuration is
# started once per module; the function-scoped wrappers delete whatever
# sessions and kernels a test left behind.


@pytest.fixture(scope="module")
def stock_module() -> Iterator[JupyterServer]:
    with running_jupyter_server() as server:
        yield server


@pytest.fixture(scope="module")
def documents_module() -> Iterator[JupyterServer]:
    with running_jupyter_server(documents=True) as server:
        yield server


@pytest.fixture(scope="module")
def legacy_module() -> Iterator[JupyterServer]:
    # The rate limit rides along here so that it costs no extra server.
    with running_jupyter_server(legacy_protocol=True, rate_limit=True) as server:
        yield server


@pytest.fixture
def stock(stock_module: JupyterServer) -> Iterator[JupyterServer]:
    yield stock_module
    stock_module.delete_all()


@pytest.fixture
def documents(documents_module: JupyterServer) -> Iterator[JupyterServer]:
    yield documents_module
    documents_module.delete_all()


@pytest.fixture
def legacy(legacy_module: JupyterServer) -> Iterator[JupyterServer]:
    yield legacy_module
    legacy_module.delete_all()


def _new_kernel(server: JupyterServer) -> str:
    """Create a console session and return its kernel id.

    Parameters
    ----------
    server
        The server to create it on.

    Returns
    -------
    str
        The kernel id.
    """
    response = server.api(
        "POST",
        "api/sessions",
        json={"kernel": {"name": "lsst"}, "path": uuid.uuid4().hex, "type": "console"},
    )
    assert response.status_code == 201, response.text
    kernel_id: str = response.json()["kernel"]["id"]
    return kernel_id


def _channels_url(server: JupyterServer, kernel_id: str) -> str:
    return f"{server.ws_url}api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"


def _connect(
    server: JupyterServer, kernel_id: str, subprotocols: list[str] | None = None
) -> websocket.WebSocket:
    """Open a kernel WebSocket with websocket-client.

    Parameters
    ----------
    server
        The server.
    kernel_id
        The kernel to connect to.
    subprotocols
        Subprotocols to offer, if any.

    Returns
    -------
    websocket.WebSocket
        The connected socket, with a 30 s timeout.
    """
    return websocket.create_connection(
        _channels_url(server, kernel_id),
        subprotocols=subprotocols,
        header=[f"Authorization: token {server.token}"],
        timeout=30,
    )


def _legacy_message(msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """Build a shell message in the legacy (JSON text frame) protocol."""
    return {
        "channel": "shell",
        "header": {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": uuid.uuid4().hex,
            "username": "test",
            "version": "5.4",
            "date": datetime.now(timezone.utc).isoformat(),
        },
        "parent_header": {},
        "metadata": {},
        "content": content,
        "buffers": [],
    }


def _legacy_execute(server: JupyterServer, code: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Run code in a new kernel over the legacy JSON protocol.

    Parameters
    ----------
    server
        A stock server (one that speaks the legacy protocol when the client
        offers no subprotocol).
    code
        The code to run.
    timeout
        Seconds the whole execution may take.

    Returns
    -------
    list of dict
        The messages answering the request, up to both the ``execute_reply``
        and the ``idle`` status.
    """
    ws = _connect(server, _new_kernel(server))
    try:
        request = _legacy_message(
            "execute_request",
            {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
        )
        msg_id = request["header"]["msg_id"]
        ws.send(json.dumps(request))
        deadline = time.monotonic() + timeout
        replies: list[dict[str, Any]] = []
        replied = idle = False
        while not (replied and idle):
            ws.settimeout(max(0.01, deadline - time.monotonic()))
            message = json.loads(ws.recv())
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            replies.append(message)
            replied = replied or message["msg_type"] == "execute_reply"
            idle = idle or (
                message["msg_type"] == "status" and message["content"]["execution_state"] == "idle"
            )
        return replies
    finally:
        ws.close()


def _handshake_subprotocol(server: JupyterServer, kernel_id: str, offered: str) -> str | None:
    """Do a raw WebSocket handshake and return the subprotocol the server chose.

    websocket-client refuses a handshake in which the server chose none of
    the offered subprotocols, so the server's own answer is read here.

    Parameters
    ----------
    server
        The server.
    kernel_id
        The kernel.
    offered
        The subprotocol to offer.

    Returns
    -------
    str or None
        The ``Sec-WebSocket-Protocol`` of the 101 answer, if any.
    """
    url = urlsplit(_channels_url(server, kernel_id))
    assert url.hostname is not None
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request(
            "GET",
            f"{url.path}?{url.query}",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
                "Sec-WebSocket-Version": "13",
                "Sec-WebSocket-Protocol": offered,
                "Authorization": f"token {server.token}",
            },
        )
        response = conn.getresponse()
        assert response.status == 101, response.status
        return response.getheader("Sec-WebSocket-Protocol")
    finally:
        conn.close()


@pytest.mark.parametrize("name", ["stock", "documents", "legacy"])
def test_server_starts_with_lsst_kernel(name: str, request: pytest.FixtureRequest) -> None:
    server: JupyterServer = request.getfixturevalue(name)
    assert server.url.startswith("http://127.0.0.1:")
    assert server.url.endswith("/")
    assert server.kind == ("documents" if name == "documents" else "stock")
    assert server.start_seconds < 60
    specs = server.api("GET", "api/kernelspecs").json()
    assert specs["default"] == "lsst"
    assert specs["kernelspecs"]["lsst"]["spec"]["display_name"] == "LSST"
    assert specs["kernelspecs"]["lsst"]["spec"]["argv"][0] == sys.executable
    # The token is required, and no cookie stands in for it.
    assert server.api("GET", "api/sessions", headers={"Authorization": ""}).status_code == 403
    wrong = {"Authorization": "token wrong"}
    assert server.api("GET", "api/sessions", headers=wrong).status_code == 403


@pytest.mark.parametrize("name", ["stock", "documents"])
def test_console_session(name: str, request: pytest.FixtureRequest) -> None:
    server: JupyterServer = request.getfixturevalue(name)
    path = uuid.uuid4().hex
    response = server.api(
        "POST",
        "api/sessions",
        json={"kernel": {"name": "lsst"}, "path": path, "type": "console"},
    )
    assert response.status_code == 201, response.text
    session = response.json()
    assert session["kernel"]["name"] == "lsst"
    assert [s["id"] for s in server.sessions()] == [session["id"]]
    assert [k["id"] for k in server.kernels()] == [session["kernel"]["id"]]
    server.delete_all()
    assert server.sessions() == []
    assert server.kernels() == []


def test_extension_state(stock: JupyterServer, documents: JupyterServer) -> None:
    # A route of the documents extension exists only where it is loaded.
    assert documents.api("GET", "api/fileid/index?path=x").status_code != 404
    assert stock.api("GET", "api/fileid/index?path=x").status_code == 404
    assert "jupyter_server_documents | extension was successfully loaded" in documents.log()
    assert "jupyter_server_documents" not in stock.log()
    # The extensions the tests do not need stay off.
    for server in (stock, documents):
        assert "jupyterlab | extension" not in server.log()
        assert "jupyter_lsp | extension" not in server.log()


def test_documents_websocket_class(stock: JupyterServer, documents: JupyterServer) -> None:
    """Only the stock kernel WebSocket understands legacy JSON text frames.

    The documents connection class decodes every incoming frame as v1 binary,
    so a text frame makes it drop the connection.
    """
    for server in (stock, documents):
        ws = _connect(server, _new_kernel(server))
        request = _legacy_message("kernel_info_request", {})
        ws.send(json.dumps(request))
        reply = None
        try:
            while reply is None:
                opcode, data = ws.recv_data()
                if opcode != websocket.ABNF.OPCODE_TEXT:
                    continue
                message = json.loads(data)
                if (
                    message["parent_header"].get("msg_id") == request["header"]["msg_id"]
                    and message["msg_type"] == "kernel_info_reply"
                ):
                    reply = message
        except websocket.WebSocketConnectionClosedException:
            pass
        finally:
            ws.close()
        if server.kind == "stock":
            assert reply is not None
            assert reply["msg_type"] == "kernel_info_reply"
        else:
            assert reply is None


@pytest.mark.parametrize(("name", "chosen"), [("stock", V1), ("documents", V1), ("legacy", None)])
def test_subprotocol(name: str, chosen: str | None, request: pytest.FixtureRequest) -> None:
    server: JupyterServer = request.getfixturevalue(name)
    kernel_id = _new_kernel(server)
    assert _handshake_subprotocol(server, kernel_id, V1) == chosen
    if chosen:
        ws = _connect(server, kernel_id, [V1])
        try:
            assert ws.getsubprotocol() == chosen
        finally:
            ws.close()
    else:
        # websocket-client rejects an answer without the offered subprotocol.
        with pytest.raises(websocket.WebSocketException):
            _connect(server, kernel_id, [V1])


def test_rate_limit(stock: JupyterServer, legacy: JupyterServer) -> None:
    code = "print('x' * 4_000_000)"
    for server, limited in ((stock, False), (legacy, True)):
        messages = _legacy_execute(server, code)
        text = "".join(m["content"]["text"] for m in messages if m["msg_type"] == "stream")
        reply = next(m for m in messages if m["msg_type"] == "execute_reply")
        assert reply["content"]["status"] == "ok"
        if limited:
            assert "IOPub data rate exceeded." in text
        else:
            assert text == "x" * 4_000_000 + "\n"


def _complete_frames(buffer: bytearray) -> Iterator[int]:
    """Take the complete WebSocket frames off the front of a buffer.

    Server frames are not masked.

    Parameters
    ----------
    buffer
        Bytes received so far; complete frames are removed from it.

    Yields
    ------
    int
        The opcode of each complete frame.
    """
    while len(buffer) >= 2:
        length, start = buffer[1] & 0x7F, 2
        if length == 126:
            if len(buffer) < 4:
                return
            length, start = struct.unpack_from(">H", buffer, 2)[0], 4
        elif length == 127:
            if len(buffer) < 10:
                return
            length, start = struct.unpack_from(">Q", buffer, 2)[0], 10
        if len(buffer) < start + length:
            return
        opcode = buffer[0] & 0x0F
        del buffer[: start + length]
        yield opcode


def _watch(ws: websocket.WebSocket, seconds: float, answer: str | None) -> float | None:
    """Watch a socket's frames, optionally sending a control frame regularly.

    websocket-client answers pings on its own while it reads, which would
    hide the server's ping timeout, so the frames are read off the raw socket
    here, and nothing answers the server's pings.

    Parameters
    ----------
    ws
        A connected socket whose frames nobody else reads.
    seconds
        How long to watch.
    answer
        ``"pong"`` or ``"ping"`` to send one such frame every 0.1 s, or
        `None` to send nothing.

    Returns
    -------
    float or None
        Seconds until the server's close frame, or `None` if it did not
        close the socket.
    """
    sock = ws.sock
    assert sock is not None
    buffer = bytearray()
    start = time.monotonic()
    end = start + seconds
    next_answer = start + 0.1
    while (now := time.monotonic()) < end:
        # The select timeout paces the answers; it waits on the socket.
        ready, _, _ = select.select([sock], [], [], min(end, next_answer) - now)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                raise EOFError("the server dropped the connection")
            buffer += chunk
            for opcode in _complete_frames(buffer):
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    return time.monotonic() - start
        if time.monotonic() >= next_answer:
            next_answer += 0.1
            if answer == "pong":
                ws.pong(b"")
            elif answer == "ping":
                ws.ping(b"")
    return None


def test_ping_timeout() -> None:
    """The server closes a socket that sent no pong for ``ping_timeout``.

    The ping loop is in jupyter_server's kernel WebSocket handler, which the
    documents extension keeps (it swaps only the connection class behind
    it), so a stock server stands for both kinds.
    """
    interval, timeout = 0.2, 0.6
    with running_jupyter_server(ping_interval=interval, ping_timeout=timeout) as server:
        kernel_id = _new_kernel(server)
        results: dict[str | None, float | None] = {}
        for answer in (None, "pong", "ping"):
            ws = _connect(server, kernel_id, [V1])
            try:
                results[answer] = _watch(ws, 2 * timeout + interval, answer)
            finally:
                ws.close()
    # Silence closes the socket at the first check after the timeout.
    closed = results[None]
    assert closed is not None
    assert timeout - 0.05 <= closed <= timeout + interval + 0.5
    # An unsolicited pong resets the clock; a ping from the client does not.
    assert results["pong"] is None
    assert results["ping"] is not None


def test_start_failure_reports_output() -> None:
    with pytest.raises(RuntimeError, match="exited") as info:  # noqa: SIM117
        with running_jupyter_server(extra_args=["--ServerApp.port=not-a-port"]):
            pass
    assert "not-a-port" in str(info.value)


def test_documents_refuses_legacy() -> None:
    with pytest.raises(ValueError, match="legacy"):  # noqa: SIM117
        with running_jupyter_server(documents=True, legacy_protocol=True):
            pass


def _alive(proc: psutil.Process) -> bool:
    with contextlib.suppress(psutil.NoSuchProcess):
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    return False


def test_teardown_stops_kernels() -> None:
    with running_jupyter_server() as server:
        root = server.root_dir
        _legacy_execute(server, "pass")
        processes = server.descendants()
        assert any("ipykernel_launcher" in p.cmdline() for p in processes)
        main = psutil.Process(server.pid)
    assert not _alive(main)
    assert [p for p in processes if _alive(p)] == []
    assert not root.exists()


def test_teardown_after_server_crash() -> None:
    """Kernels and their children outlive a killed server; teardown ends them.

    The kernel notices its parent's death only within a second or so and
    then leaves its own children running.
    """
    with running_jupyter_server() as server:
        messages = _legacy_execute(
            server, "import subprocess; print(subprocess.Popen(['sleep', '300']).pid)"
        )
        sleeper = int(next(m for m in messages if m["msg_type"] == "stream")["content"]["text"])
        processes = server.descendants()
        assert sleeper in [p.pid for p in processes]
        os.kill(server.pid, signal.SIGKILL)
    assert [p for p in processes if _alive(p)] == []
