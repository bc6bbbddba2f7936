"""A TCP proxy on 127.0.0.1 that delays every byte by a fixed time each way.

It stands for a far-away lab: a client talking to the proxy sees the
server's answers one round trip (twice the one-way delay) later, while the
bytes flow as fast as the server and client can move them (the delay is a
latency, not a bandwidth cap: every chunk read at time t is written at
t + delay, however many are in flight).

Each direction of each connection has a reader thread, which timestamps
what it reads, and a writer thread, which writes it when due. Both sockets
have ``TCP_NODELAY`` on, so the proxy adds no Nagle stall of its own:
whatever stall the endpoints make (the lab leaves Nagle's algorithm on) is
theirs.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import sys
import threading
import time
from typing import Deque, Iterator, List, Optional, Tuple

__all__ = ["DelayProxy", "delay_proxy_process", "running_delay_proxy"]

_CHUNK = 256 * 1024


class _Pipe:
    """One direction: read from ``source``, write to ``sink`` ``delay`` later."""

    def __init__(self, source: socket.socket, sink: socket.socket, delay: float) -> None:
        self.source, self.sink, self.delay = source, sink, delay
        self._queue: Deque[Tuple[float, bytes]] = collections.deque()
        self._ready = threading.Condition()
        self.threads = [
            threading.Thread(target=self._read, name="delay-proxy-read", daemon=True),
            threading.Thread(target=self._write, name="delay-proxy-write", daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def _put(self, data: bytes) -> None:
        with self._ready:
            self._queue.append((time.monotonic() + self.delay, data))
            self._ready.notify()

    def _read(self) -> None:
        try:
            while True:
                data = self.source.recv(_CHUNK)
                self._put(data)
                if not data:
                    return
        except OSError:
            self._put(b"")

    def _write(self) -> None:
        try:
            while True:
                with self._ready:
                    while not self._queue:
                        self._ready.wait()
                    due, data = self._queue.popleft()
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                if not data:
                    with contextlib.suppress(OSError):
                        self.sink.shutdown(socket.SHUT_WR)
                    return
                self.sink.sendall(data)
        except OSError:
            with contextlib.suppress(OSError):
                self.source.shutdown(socket.SHUT_RDWR)


class DelayProxy:
    """Forwards every connection on a local port to ``target``, ``one_way`` seconds late.

    Parameters
    ----------
    target
        ``(host, port)`` of the server.
    one_way
        Delay in each direction, in seconds; the round trip adds twice that.
    """

    def __init__(self, target: Tuple[str, int], one_way: float) -> None:
        self.target = target
        self.one_way = one_way
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._sockets: List[socket.socket] = []
        self._pipes: List[_Pipe] = []
        self._lock = threading.Lock()
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="delay-proxy", daemon=True)
        self._acceptor.start()

    def url(self, path: str = "/") -> str:
        """HTTP URL of the proxy."""
        return f"http://127.0.0.1:{self.port}{path}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream: Optional[socket.socket] = None
            try:
                upstream = socket.create_connection(self.target)
                for sock in (client, upstream):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                client.close()
                if upstream is not None:
                    upstream.close()
                continue
            with self._lock:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
                self._pipes.append(_Pipe(client, upstream, self.one_way))
                self._pipes.append(_Pipe(upstream, client, self.one_way))

    def close(self) -> None:
        """Stop accepting and drop every connection."""
        with self._lock:
            self._closed = True
            sockets, self._sockets = self._sockets, []
            pipes = list(self._pipes)
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        for pipe in pipes:
            pipe._put(b"")  # wake its writer
            for thread in pipe.threads:
                thread.join(timeout=5)
        self._acceptor.join(timeout=5)


@contextlib.contextmanager
def running_delay_proxy(target: Tuple[str, int], one_way: float) -> Iterator[DelayProxy]:
    """Run a `DelayProxy` for the duration of a ``with`` block."""
    proxy = DelayProxy(target, one_way)
    try:
        yield proxy
    finally:
        proxy.close()


@contextlib.contextmanager
def delay_proxy_process(
    one_way: float, targets: List[Tuple[str, int]], python: str = sys.executable
) -> Iterator[List[int]]:
    """Run the proxies in a process of their own; yield their ports.

    A process of its own keeps the proxy's threads off the client's GIL and
    out of its CPU time.
    """
    import subprocess

    command = [python, __file__, repr(one_way), *(f"{h}:{p}" for h, p in targets)]
    with subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as process:
        assert process.stdin is not None
        assert process.stdout is not None
        try:
            line = process.stdout.readline()
            if not line.startswith("PORTS "):
                raise RuntimeError(f"delay proxy did not start: {line!r}")
            yield [int(port) for port in line.split()[1:]]
        finally:
            process.stdin.close()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


def main(argv: List[str]) -> int:
    """``_delay_proxy.py ONE_WAY_S HOST:PORT...``: one proxy per target.

    Prints ``PORTS <port>...`` (in the order of the targets) once all
    listen, and runs until its standard input closes.
    """
    one_way = float(argv[0])
    targets = [(host, int(port)) for host, port in (t.rsplit(":", 1) for t in argv[1:])]
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(running_delay_proxy(t, one_way)) for t in targets]
        sys.stdout.write("PORTS " + " ".join(str(p.port) for p in proxies) + "\n")
        sys.stdout.flush()
        sys.stdin.read()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
