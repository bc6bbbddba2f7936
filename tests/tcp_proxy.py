"""A TCP proxy on 127.0.0.1 that a test can freeze, cut, or make lie.

It sits between the client and a real server so a test can produce the
network faults a healthy server never does: a connection that goes silent,
one that drops without a close frame, one that closes with a close frame in
the middle of a request. It also reads the WebSocket frames the client
sends, so a test can count them by kind (`client_frames`).
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from typing import Callable, Dict, Iterator, List, Optional, Tuple

__all__ = ["TCPProxy", "WebSocketFrameCounter", "running_proxy"]


class WebSocketFrameCounter:
    """Counts the frames in one client-to-server byte stream, by opcode.

    Bytes before the end of the HTTP request head (the upgrade) are skipped;
    a plain HTTP connection never gets past it.
    """

    def __init__(self) -> None:
        self.counts: Dict[int, int] = {}
        self._buffer = b""
        self._upgraded = False

    def feed(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            self._upgraded = self._buffer.startswith(b"GET ")
            self._buffer = self._buffer[end + 4 :] if self._upgraded else b""
            if not self._upgraded:
                return
        while len(self._buffer) >= 2:
            opcode = self._buffer[0] & 0x0F
            length = self._buffer[1] & 0x7F
            header = 2
            if length == 126:
                header = 4
            elif length == 127:
                header = 10
            if len(self._buffer) < header:
                return
            if length == 126:
                (length,) = struct.unpack("!H", self._buffer[2:4])
            elif length == 127:
                (length,) = struct.unpack("!Q", self._buffer[2:10])
            masked = self._buffer[1] & 0x80
            total = header + (4 if masked else 0) + length
            if len(self._buffer) < total:
                return
            self.counts[opcode] = self.counts.get(opcode, 0) + 1
            self._buffer = self._buffer[total:]


class TCPProxy:
    """Forwards every connection on a local port to ``target``."""

    def __init__(self, target: Tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._pairs: List[Tuple[socket.socket, socket.socket]] = []
        self._counters: List[WebSocketFrameCounter] = []
        self._lock = threading.Lock()
        self._frozen = threading.Event()
        self._stop = threading.Event()
        self._threads: List[threading.Thread] = []
        self._pumps: Dict[socket.socket, threading.Thread] = {}
        self.gate: Optional[Callable[[], bool]] = None
        """While set and answering `False`, new connections are closed at
        once (a proxy that is restarting)."""
        self.refused = 0
        """Connections closed by the gate."""
        self.drop_after_upgrade = False
        """While true, a WebSocket upgrade goes through and its connection
        is then reset before any frame (a lab that drops every kernel
        WebSocket at once)."""
        self.dropped_upgrades = 0
        """Connections reset right after their upgrade."""
        self._start(self._accept_loop)

    def url(self, path: str = "/") -> str:
        """HTTP URL of the proxy."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _start(self, target: object, *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        thread.start()
        self._threads.append(thread)
        return thread

    def _accept_loop(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            gate = self.gate
            if gate is not None and not gate():
                with self._lock:
                    self.refused += 1
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self._lock:
                self._pairs.append((client, upstream))
            self._pumps[client] = self._start(self._pump, client, upstream)

    def client_frames(self) -> Dict[str, int]:
        """WebSocket frames the clients have sent so far, over all connections, by kind."""
        names = {0x0: "continuation", 0x1: "text", 0x2: "binary", 0x8: "close", 0x9: "ping"}
        names[0xA] = "pong"
        totals: Dict[str, int] = {}
        with self._lock:
            for counter in self._counters:
                for opcode, count in counter.counts.items():
                    name = names.get(opcode, hex(opcode))
                    totals[name] = totals.get(name, 0) + count
        return totals

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        peers = {client: upstream, upstream: client}
        counter = WebSocketFrameCounter()
        with self._lock:
            self._counters.append(counter)
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                if self._frozen.is_set():
                    # Frozen: data stays in the kernel buffers, unread.
                    self._stop.wait(0.05)
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        with self._lock:
                            counter.feed(data)
                    elif self.drop_after_upgrade and data.startswith(b"HTTP/1.1 101"):
                        # The answer's head only: no frame that follows it.
                        head = data[: data.find(b"\r\n\r\n") + 4]
                        client.sendall(head)
                        with self._lock:
                            self.dropped_upgrades += 1
                        for end in (client, upstream):
                            end.setsockopt(
                                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                            )
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            # ValueError: cut() closed a socket under select (its fd is -1).
            return
        finally:
            for sock in peers:
                with contextlib.suppress(OSError):
                    sock.close()

    def freeze(self) -> None:
        """Stop forwarding in both directions, keeping connections open."""
        self._frozen.set()

    def thaw(self) -> None:
        """Resume forwarding."""
        self._frozen.clear()

    def go_down(self, gate: Callable[[], bool]) -> None:
        """Drop every connection and refuse new ones until ``gate()`` is true."""
        self.gate = gate
        self.cut()

    def cut(self) -> None:
        """Drop every connection abruptly (no close frame, TCP reset)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for client, upstream in pairs:
            for sock in (client, upstream):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    sock.close()
        # A socket closed under another thread's select is released (and
        # the reset sent) only when that select returns: wait for the
        # pumps, so that both ends have seen the reset when cut() returns.
        for client, _ in pairs:
            pump = self._pumps.pop(client, None)
            if pump is not None and pump is not threading.current_thread():
                pump.join(timeout=5)

    def send_close_frame(self, code: int = 1011, reason: bytes = b"going away") -> None:
        """Freeze, then send every client a WebSocket close frame.

        Only safe while no server frame is half forwarded, i.e. while the
        server is silent.
        """
        self.freeze()
        payload = struct.pack("!H", code) + reason
        frame = bytes([0x88, len(payload)]) + payload
        with self._lock:
            clients = [client for client, _ in self._pairs]
        for client in clients:
            with contextlib.suppress(OSError):
                client.sendall(frame)

    def close(self) -> None:
        """Stop the proxy and every connection."""
        self._stop.set()
        self.cut()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@contextlib.contextmanager
def running_proxy(target: Tuple[str, int]) -> Iterator[TCPProxy]:
    """Run a `TCPProxy` for the duration of a ``with`` block."""
    proxy = TCPProxy(target)
    try:
        yield proxy
    finally:
        proxy.close()
