"""A threaded HTTP/1.1 server on the standard library, with WebSocket upgrades.

The server knows nothing of Jupyter: it parses each request into a
`Request`, asks the application for a `Response`, and writes it, which may
be a plain body, a chunked stream (server-sent events) or a WebSocket
upgrade whose connection is then handed to the application.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import sys
import threading
import traceback
from dataclasses import dataclass, field
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Protocol, Sequence, Set, Tuple
from urllib.parse import parse_qsl, urlsplit

from ._websocket import ServerWebSocket, WebSocketError, handshake_headers

__all__ = ["App", "MockHTTPServer", "Request", "Response"]

_logger = logging.getLogger("nublado_sync.testing")

WebSocketHandler = Callable[[ServerWebSocket, Optional[str]], None]
"""Runs an accepted WebSocket: gets the connection and the agreed subprotocol."""


@dataclass
class Request:
    """One HTTP request as the application sees it."""

    method: str
    host: str
    """Host name from the ``Host`` header, lower case, without the port."""
    path: str
    """Path without the query."""
    query: Dict[str, str]
    """Query parameters (the first value of each)."""
    raw_query: str
    headers: Message[str, str]
    body: bytes
    cookies: Dict[str, List[str]]
    """Cookie values by name (a name may come more than once)."""

    @property
    def target(self) -> str:
        """Path and query, as in the request line."""
        return self.path + (f"?{self.raw_query}" if self.raw_query else "")

    def cookie(self, name: str) -> List[str]:
        """Return every value sent for a cookie."""
        return self.cookies.get(name, [])

    def header(self, name: str) -> str:
        """Return a header's value, empty when absent."""
        return self.headers.get(name) or ""


@dataclass
class Response:
    """What to answer."""

    status: int
    body: bytes = b""
    headers: List[Tuple[str, str]] = field(default_factory=list)
    stream: Optional[Iterator[bytes]] = None
    """Body sent with chunked encoding as it is produced."""
    websocket: Optional[WebSocketHandler] = None
    """Accept a WebSocket upgrade and run this on the connection."""
    subprotocols: Sequence[str] = ()
    """Subprotocols to agree to for a WebSocket, best first."""

    @classmethod
    def json(
        cls, status: int, value: Any, headers: Optional[List[Tuple[str, str]]] = None
    ) -> Response:
        """Build a JSON response."""
        return cls(
            status,
            json.dumps(value).encode(),
            [("Content-Type", "application/json"), *(headers or [])],
        )

    @classmethod
    def error(cls, status: int, message: str) -> Response:
        """Build a JSON error response in Jupyter's shape."""
        return cls.json(status, {"status": status, "message": message})

    @classmethod
    def html(
        cls, status: int, text: str, headers: Optional[List[Tuple[str, str]]] = None
    ) -> Response:
        """Build an HTML response."""
        return cls(
            status,
            text.encode(),
            [("Content-Type", "text/html; charset=UTF-8"), *(headers or [])],
        )

    @classmethod
    def redirect(
        cls, location: str, *, status: int = 302, headers: Optional[List[Tuple[str, str]]] = None
    ) -> Response:
        """Build a redirect."""
        return cls(status, b"", [("Location", location), *(headers or [])])


class App(Protocol):
    """What the server serves."""

    def handle(self, request: Request) -> Response:
        """Answer one request."""


def _parse_cookies(headers: Message[str, str]) -> Dict[str, List[str]]:
    cookies: Dict[str, List[str]] = {}
    for header in headers.get_all("Cookie") or []:
        for part in header.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep and name:
                cookies.setdefault(name, []).append(value.strip().strip('"'))
    return cookies


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Small messages go out at once instead of waiting for an ACK.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        self.server.track(self.connection, add=False)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        _logger.debug("%s %s", self.address_string(), format % args)

    def _request(self) -> Request:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        host = (self.headers.get("Host") or "").strip().lower()
        if host.startswith("["):
            host = host[1 : host.find("]")]
        else:
            host = host.rsplit(":", 1)[0] if ":" in host else host
        return Request(
            method=self.command,
            host=host,
            path=parts.path,
            query=dict(reversed(parse_qsl(parts.query, keep_blank_values=True))),
            raw_query=parts.query,
            headers=self.headers,
            body=body,
            cookies=_parse_cookies(self.headers),
        )

    def _dispatch(self) -> None:
        request = self._request()
        try:
            response = self.server.app.handle(request)
        except Exception:
            _logger.exception("Mock server failed on %s %s", request.method, request.path)
            response = Response(
                500, traceback.format_exc().encode(), [("Content-Type", "text/plain")]
            )
        _logger.debug(
            "%s %s%s -> %d", request.method, request.host, request.target, response.status
        )
        if response.websocket is not None:
            self._upgrade(request, response)
        elif response.stream is not None:
            self._send_stream(response)
        else:
            self._send(response)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _dispatch  # noqa: N815

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def _send_stream(self, response: Response) -> None:
        assert response.stream is not None
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        stream = response.stream
        try:
            for chunk in stream:
                if chunk:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except OSError:
            # The client went away; stop producing.
            self.close_connection = True
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()

    def _upgrade(self, request: Request, response: Response) -> None:
        assert response.websocket is not None
        try:
            headers, chosen = handshake_headers(request.headers, subprotocols=response.subprotocols)
        except WebSocketError as e:
            self._send(Response.error(e.code, str(e)))
            return
        self.send_response(101)
        for name, value in [*headers, *response.headers]:
            self.send_header(name, value)
        self.end_headers()
        self.close_connection = True
        ws = ServerWebSocket(self.rfile.read, self.connection.sendall)
        try:
            response.websocket(ws, chosen)
        finally:
            ws.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    app: App

    def __init__(self, address: Tuple[str, int], app: App) -> None:
        super().__init__(address, _Handler)
        self.app = app
        self._connections: Set[socket.socket] = set()
        self._lock = threading.Lock()

    def track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that resets or drops its connection (a test of timeouts,
        # a closed client) is normal here; anything else keeps the default
        # traceback on stderr.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class MockHTTPServer:
    """An HTTP server for an `App` on a free port, in a background thread.

    Parameters
    ----------
    app
        The application.
    host
        Address to listen on.
    port
        Port to listen on; a free one when 0.
    """

    def __init__(self, app: App, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server((host, port), app)
        self.host = host
        self.port: int = self._server.server_address[1]
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        """Serve in a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"mock-jupyter-{self.port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving and cut every open connection."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.drop_connections()
        self._server.server_close()
