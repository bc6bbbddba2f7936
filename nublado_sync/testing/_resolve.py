"""Resolving made-up host names to 127.0.0.1 inside the test process.

Per-user subdomains need host names: the hub at ``nublado.test`` and each
lab at ``<user>.nublado.test``. ``.test`` never resolves on a real network
(RFC 2606) and ``*.localhost`` does not resolve everywhere either, so the
mock answers those names itself by wrapping `socket.getaddrinfo` (what
``requests``/``urllib3`` and ``websocket-client`` call) and
`socket.gethostbyname` for as long as any `loopback_hosts` block is active.
System files are not touched, and other names resolve as before.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections import Counter
from typing import Any, Callable, Iterator, List, Optional, Tuple

__all__ = ["loopback_hosts"]

_LOOPBACK = "127.0.0.1"

_lock = threading.Lock()
_domains: Counter[str] = Counter()
_original_getaddrinfo: Optional[Callable[..., List[Tuple[Any, ...]]]] = None
_original_gethostbyname: Optional[Callable[[str], str]] = None


def _matches(host: Any) -> bool:
    if isinstance(host, bytes):
        host = host.decode("ascii", errors="replace")
    if not isinstance(host, str):
        return False
    name = host.lower().rstrip(".")
    with _lock:
        domains = list(_domains)
    return any(name == d or name.endswith("." + d) for d in domains)


def _getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> List[Tuple[Any, ...]]:
    original = _original_getaddrinfo or socket.getaddrinfo
    if _matches(host):
        return original(_LOOPBACK, port, socket.AF_INET, type, proto, flags)
    return original(host, port, family, type, proto, flags)


def _gethostbyname(host: str) -> str:
    original = _original_gethostbyname or socket.gethostbyname
    return _LOOPBACK if _matches(host) else original(host)


def _install() -> None:
    global _original_getaddrinfo, _original_gethostbyname  # noqa: PLW0603
    if _original_getaddrinfo is None:
        _original_getaddrinfo = socket.getaddrinfo
        _original_gethostbyname = socket.gethostbyname
        socket.getaddrinfo = _getaddrinfo
        socket.gethostbyname = _gethostbyname


def _uninstall() -> None:
    global _original_getaddrinfo, _original_gethostbyname  # noqa: PLW0603
    if _original_getaddrinfo is not None and _original_gethostbyname is not None:
        # Put back only our own wrappers; someone may have wrapped them.
        if socket.getaddrinfo is _getaddrinfo:
            socket.getaddrinfo = _original_getaddrinfo
        if socket.gethostbyname is _gethostbyname:
            socket.gethostbyname = _original_gethostbyname
        _original_getaddrinfo = _original_gethostbyname = None


@contextlib.contextmanager
def loopback_hosts(*domains: str) -> Iterator[None]:
    """Resolve the given domains and all their subdomains to 127.0.0.1.

    Works inside the current process only (every thread), by wrapping
    `socket.getaddrinfo` and `socket.gethostbyname` while any such block is
    active; blocks may nest and overlap across threads. `MockJupyter` with
    ``use_subdomains=True`` does this by itself for its hub host.

    Parameters
    ----------
    *domains
        Domains such as ``nublado.test``; ``alice.nublado.test`` then
        resolves too.

    Yields
    ------
    None
        Inside the block, the names resolve to 127.0.0.1.

    Examples
    --------
    >>> import socket
    >>> with loopback_hosts("nublado.test"):
    ...     socket.gethostbyname("alice.nublado.test")
    '127.0.0.1'
    """
    names = [d.lower().strip(".") for d in domains if d.strip(".")]
    with _lock:
        _domains.update(names)
        _install()
    try:
        yield
    finally:
        with _lock:
            _domains.subtract(names)
            for name in [d for d, n in _domains.items() if n <= 0]:
                del _domains[name]
            if not _domains:
                _uninstall()
