"""A small HTTP server of ours on 127.0.0.1 that misbehaves on command.

Each test installs handlers for the paths it cares about; every request is
recorded (method, path, headers) so a test can check what was sent where,
the token included.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["Reply", "RogueServer", "reset", "running_rogue_server"]


@dataclass
class Reply:
    """What to answer: status, headers, body."""

    status: int = 200
    headers: Dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Seen:
    """One request the server received."""

    method: str
    path: str
    headers: Dict[str, str]


Handler = Callable[["_Handler"], Optional[Reply]]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        self.server.rogue.seen.append(Seen(self.command, self.path, dict(self.headers.items())))
        path = self.path.split("?", 1)[0]
        handler = self.server.rogue.routes.get(path)
        reply = handler(self) if handler else Reply(404, body=b"not here")
        if reply is None:  # the handler wrote the answer itself
            return
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    do_GET = do_POST = do_DELETE = do_PUT = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    rogue: RogueServer

    def process_request(self, request: Any, client_address: Any) -> None:
        # Named, so tests counting the client's threads can leave these out.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="rogue-http-request",
            daemon=True,
        )
        thread.start()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that reset or drop the connection are what these tests
        # provoke; anything else still gets the default traceback.
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class RogueServer:
    """The server; ``routes`` maps a path (no query) to a handler."""

    def __init__(self) -> None:
        self.routes: Dict[str, Handler] = {}
        self.seen: List[Seen] = []
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.rogue = self
        self.port: int = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="rogue-http-serve", daemon=True
        )
        self._thread.start()

    def route(self, path: str, reply: Reply) -> None:
        """Answer ``path`` with a fixed reply."""
        self.routes[path] = lambda _: reply

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect."""
        self.route(path, Reply(status, {"Location": location}))

    def hang(self, path: str) -> None:
        """Accept requests to ``path`` and never answer (until closed)."""

        def never(_: _Handler) -> None:
            self.release.wait()

        self.routes[path] = never

    def endless(
        self,
        path: str,
        *,
        status: int = 200,
        content_type: str = "text/html",
        first: bytes = b"",
        chunk: bytes = b" ",
        interval: float = 0.1,
    ) -> None:
        """Answer ``path`` with a chunked body that never ends.

        ``first`` is sent at once, then ``chunk`` every ``interval`` seconds
        until the server closes: every single read gets data, so only a
        deadline on the whole body ends it.
        """

        def trickle(handler: _Handler) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            handler.send_header("Transfer-Encoding", "chunked")
            handler.end_headers()
            try:
                if first:
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(first), first))
                    handler.wfile.flush()
                while not self.release.wait(interval):
                    handler.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                    handler.wfile.flush()
            except OSError:
                pass
            handler.close_connection = True

        self.routes[path] = trickle

    def flaky(self, path: str, faults: List[Optional[Reply]], then: Handler) -> None:
        """Answer ``path`` with each of ``faults`` in turn, then as ``then`` does.

        A fault that is `None` resets the connection (RST, no answer) once
        the request is read, as a proxy restarting under the client does.
        """
        pending = list(faults)
        lock = threading.Lock()

        def answer(handler: _Handler) -> Optional[Reply]:
            with lock:
                if not pending:
                    fault: Optional[Reply] = then(handler)
                    return fault
                fault = pending.pop(0)
            if fault is None:
                reset(handler)
                return None
            return fault

        self.routes[path] = answer

    def paths(self) -> List[str]:
        """Paths requested so far."""
        return [s.path for s in self.seen]

    def close(self) -> None:
        """Stop serving and release hung requests; safe to call twice."""
        if self.release.is_set():
            return
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def reset(handler: _Handler) -> None:
    """Drop the handler's connection with a TCP reset, answering nothing."""
    # SO_LINGER with a zero timeout makes close() send RST.
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True
    handler.connection.close()


@contextlib.contextmanager
def running_rogue_server() -> Iterator[RogueServer]:
    """Run a `RogueServer` for the duration of a ``with`` block."""
    server = RogueServer()
    try:
        yield server
    finally:
        server.close()


def split_url(url: str) -> Tuple[str, int]:
    """Host and port of an ``http://host:port/`` URL."""
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    return host, int(port)
