"""Stopping a client's blocking calls from another thread.

An asynchronous caller cancels a task; a synchronous one calls
`NubladoClient.cancel` (or `NubladoClient.close`) from another thread, and
every call of that client in flight ends with `NubladoCancelledError`:

- an HTTP request in flight (a long ``run_notebook``, the spawn's event
  stream) ends at once: the sockets of the client's connections are shut
  down under it, and no new connection opens, so urllib3's retries end too;
- a kernel WebSocket read or write in flight ends the same way, through
  the sessions that registered themselves here;
- waits (``wait_for_lab_stopped``) wake on `Cancellation.event`.

Clean-up still runs: inside `Cancellation.cleanup` (deleting the lab
session, which shuts its kernel down) requests go through as before.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import weakref
from typing import Any, Dict, Iterator, Optional, Protocol, Type

from ._exceptions import NubladoCancelledError

__all__ = ["Cancellation"]


class _Cancellable(Protocol):
    def cancel_in_flight(self, error: NubladoCancelledError) -> None: ...


def shutdown_socket(sock: Any) -> None:
    """Shut a socket down for both directions, waking any thread blocked on it.

    A TLS socket is shut down below TLS: `ssl.SSLSocket.shutdown` also drops
    the TLS state, which the thread blocked in a read may still use.
    """
    if sock is None:
        return
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class Cancellation:
    """The cancelled state of one client, shared by its HTTP and WebSocket layers.

    Parameters
    ----------
    user
        User the client acts for (for the exceptions).
    """

    def __init__(self, user: Optional[str]) -> None:
        self.user = user
        self.event = threading.Event()
        self._reason = ""
        self._lock = threading.Lock()
        self._local = threading.local()
        # urllib3 connections ever made for this client (they hold sockets).
        self._connections: weakref.WeakSet[Any] = weakref.WeakSet()
        # Sessions (managers) with a WebSocket to stop.
        self._cancellables: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pool_classes: Dict[Type[Any], Type[Any]] = {}

    @property
    def cancelled(self) -> bool:
        """Whether the client was cancelled."""
        return self.event.is_set()

    def error(self) -> NubladoCancelledError:
        """Return the exception for a call that the cancellation stopped."""
        return NubladoCancelledError(self._reason or "Cancelled", self.user)

    def blocks(self) -> bool:
        """Whether calls must stop now (cancelled, and not in clean-up)."""
        return self.event.is_set() and not getattr(self._local, "cleanup", 0)

    def check(self) -> None:
        """Raise `NubladoCancelledError` when calls must stop.

        Raises
        ------
        NubladoCancelledError
            The client was cancelled, and this is not clean-up.
        """
        if self.blocks():
            raise self.error()

    @contextlib.contextmanager
    def cleanup(self) -> Iterator[None]:
        """Let this thread's requests through even after cancellation."""
        self._local.cleanup = getattr(self._local, "cleanup", 0) + 1
        try:
            yield
        finally:
            self._local.cleanup -= 1

    def cancel(self, reason: str) -> None:
        """Stop every call in flight and every later one (see the module).

        Parameters
        ----------
        reason
            The message of the exceptions the stopped calls raise.
        """
        with self._lock:
            if not self.event.is_set():
                self._reason = reason
                self.event.set()
            connections = list(self._connections)
            cancellables = list(self._cancellables)
        error = self.error()
        for cancellable in cancellables:
            cancellable.cancel_in_flight(error)
        for connection in connections:
            shutdown_socket(getattr(connection, "sock", None))

    def register(self, cancellable: _Cancellable) -> None:
        """Have ``cancellable.cancel_in_flight`` called on cancellation.

        Raises
        ------
        NubladoCancelledError
            Already cancelled (and not in clean-up).
        """
        with self._lock:
            self._cancellables.add(cancellable)
        self.check()

    def unregister(self, cancellable: _Cancellable) -> None:
        """Forget a registered object."""
        with self._lock:
            self._cancellables.discard(cancellable)

    def track(self, adapter: Any) -> None:
        """Record the connections a requests transport adapter makes from now on.

        Every pool manager of the adapter (its own, and those it makes for
        proxies) makes its pools with subclasses that record each new
        connection, and refuse to open one once cancelled.
        """
        if getattr(adapter, "_nublado_cancellation", None) is self:
            return
        manager = getattr(adapter, "poolmanager", None)
        if manager is not None:
            self._track_manager(manager)
        original = getattr(adapter, "proxy_manager_for", None)
        if original is not None:

            def proxy_manager_for(*args: Any, **kwargs: Any) -> Any:
                proxy_manager = original(*args, **kwargs)
                self._track_manager(proxy_manager)
                return proxy_manager

            adapter.proxy_manager_for = proxy_manager_for
        adapter._nublado_cancellation = self

    def _track_manager(self, manager: Any) -> None:
        if getattr(manager, "_nublado_cancellation", None) is self:
            return
        classes = getattr(manager, "pool_classes_by_scheme", None)
        if not isinstance(classes, dict):
            return
        # A new dict: urllib3's default is shared by every manager.
        manager.pool_classes_by_scheme = {
            scheme: self._tracking_pool(cls) for scheme, cls in classes.items()
        }
        manager._nublado_cancellation = self
        # Pools made before tracking began would not record their connections.
        manager.clear()

    def _tracking_pool(self, base: Type[Any]) -> Type[Any]:
        if base not in self._pool_classes:
            cancellation = self

            def _new_conn(pool: Any) -> Any:
                # Not an OSError: urllib3 would retry one, and must not.
                cancellation.check()
                connection = base._new_conn(pool)
                with cancellation._lock:
                    cancellation._connections.add(connection)
                return connection

            self._pool_classes[base] = type(base.__name__, (base,), {"_new_conn": _new_conn})
        return self._pool_classes[base]
