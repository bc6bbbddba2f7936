"""An HTTP front proxy of ours that injects faults in front of a real server.

It sits on 127.0.0.1 before a real hub and passes every connection through
(WebSocket upgrades included), except the first request matching each rule,
which it answers with a fault instead:

``503``
    ``503 Service Unavailable`` with ``Retry-After: 1``, as an ingress whose
    backend restarts; the server never sees the request.
``reset``
    A TCP reset once the request is read; the server never sees it.
``lost``
    The request goes to the server, which acts on it; its answer is
    dropped and the client's connection reset, as when a proxy restarts
    with the answer on its way.

Each connection carries one request (``Connection: close`` is added), so
that every request is seen.
"""

from __future__ import annotations

import contextlib
import re
import select
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = ["FaultProxy", "Rule", "running_fault_proxy"]

_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
    b"Content-Length: 5\r\nConnection: close\r\n\r\nlater"
)


@dataclass
class Rule:
    """The first request with ``method`` whose path matches ``path`` gets ``fault``."""

    method: str
    path: str
    fault: str
    fired: bool = field(default=False)


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


class FaultProxy:
    """The proxy; ``rules`` say which requests get which fault."""

    def __init__(self, target: tuple[str, int], rules: list[Rule]) -> None:
        self.target = target
        self.rules = rules
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="rogue-fault-proxy", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(
                target=self._serve, args=(client,), name="rogue-fault-conn", daemon=True
            ).start()

    def _rule_for(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.seen.append(f"{method} {path}")
            for rule in self.rules:
                if not rule.fired and rule.method == method and re.search(rule.path, path):
                    rule.fired = True
                    return rule
        return None

    def _serve(self, client: socket.socket) -> None:
        upstream: socket.socket | None = None
        try:
            client.settimeout(60)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = client.recv(65536)
                if not chunk:
                    client.close()
                    return
                data += chunk
            head, _, rest = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path = lines[0].split(" ")[:2]
            headers = [line for line in lines[1:] if line]
            length = 0
            upgrade = False
            for line in headers:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
                if name.strip().lower() == "upgrade":
                    upgrade = True
            while len(rest) < length:
                chunk = client.recv(65536)
                if not chunk:
                    break
                rest += chunk
            rule = self._rule_for(method, path)
            if rule is not None and rule.fault == "503":
                client.sendall(_UNAVAILABLE)
                client.close()
                return
            if rule is not None and rule.fault == "reset":
                _reset(client)
                return
            if not upgrade:
                headers = [h for h in headers if not h.lower().startswith("connection:")]
                headers.append("Connection: close")
            request = "\r\n".join([lines[0], *headers]).encode("latin-1") + b"\r\n\r\n" + rest
            upstream = socket.create_connection(self.target, timeout=60)
            upstream.sendall(request)
            if rule is not None and rule.fault == "lost":
                # The server acts; its whole answer is read and dropped.
                while upstream.recv(65536):
                    pass
                _reset(client)
                return
            self._pipe(client, upstream)
        except OSError:
            pass
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()

    def _pipe(self, a: socket.socket, b: socket.socket) -> None:
        a.settimeout(None)
        b.settimeout(None)
        sockets = [a, b]
        while not self._stop.is_set():
            readable, _, _ = select.select(sockets, [], [], 0.5)
            for sock in readable:
                data = sock.recv(65536)
                if not data:
                    return
                (b if sock is a else a).sendall(data)

    def fired(self) -> list[str]:
        """The rules that fired, as ``"<fault> <method> <path pattern>"``."""
        with self._lock:
            return [f"{r.fault} {r.method} {r.path}" for r in self.rules if r.fired]

    def close(self) -> None:
        """Stop accepting; connections in progress end within half a second."""
        self._stop.set()
        self._listener.close()
        self._thread.join(5)


@contextlib.contextmanager
def running_fault_proxy(target: tuple[str, int], rules: list[Rule]) -> Iterator[FaultProxy]:
    """Run a `FaultProxy` in front of ``target`` for the duration of a block."""
    proxy = FaultProxy(target, rules)
    try:
        yield proxy
    finally:
        proxy.close()
