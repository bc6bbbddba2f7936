"""Out-of-order calls: recorded by the fake hub, raised as AssertionError by the client.

The async client's kit runs inside the caller's thread (RESPX routes), so
an ``assert`` in it fails the very call that broke the order: spawning
before logging in, watching a spawn that was never asked for, spawning a
second lab. This kit is a server in another thread, where an ``assert``
would only kill the request. So the rooms record each such call here and
answer what a real hub answers (a redirect to the login, 400, 403 or 404),
marked with the `VIOLATION_HEADER`. The client's HTTP layer hands every
response to the observers in ``nublado_sync._http.response_observers``;
`observe`, registered there when a mock starts, finds the mark of a mock
of this process and raises `AssertionError` with the mock's words in the
thread that made the call. A mark that no mock of this process recorded
is ignored, so no server can make a client raise it.

What no client raised (a client in another process, or code that read the
HTTP answer itself) is left for `OrderBook.check`, which the
``mock_jupyter`` fixture and ``register_mock_jupyter`` call when the test
ends.
"""

from __future__ import annotations

import secrets
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, List, Optional

from ._server import Response

if TYPE_CHECKING:
    import requests

__all__ = ["VIOLATION_HEADER", "OrderBook", "Violation", "install", "observe"]

VIOLATION_HEADER = "X-Mock-Jupyter-Violation"

_books: weakref.WeakSet[OrderBook] = weakref.WeakSet()
_books_lock = threading.Lock()


@dataclass
class Violation:
    """One out-of-order call."""

    id: str
    message: str
    raised: bool = False


class OrderBook:
    """The out-of-order calls one mock saw.

    Parameters
    ----------
    enforce
        Record violations; when `False` the answers carry no mark.
    """

    def __init__(self, *, enforce: bool) -> None:
        self.enforce = enforce
        self._lock = threading.Lock()
        self._violations: List[Violation] = []

    def refuse(self, response: Response, message: str) -> Response:
        """Record a violation and mark the answer that goes with it.

        Parameters
        ----------
        response
            What a real hub answers to the call.
        message
            What the test's AssertionError says.

        Returns
        -------
        Response
            The same answer, marked when violations are enforced.
        """
        if not self.enforce:
            return response
        violation = Violation(secrets.token_hex(8), f"MockJupyter: out-of-order call: {message}")
        with self._lock:
            self._violations.append(violation)
        response.headers.append((VIOLATION_HEADER, violation.id))
        return response

    def claim(self, violation_id: str) -> Optional[Violation]:
        """Mark a violation raised by a client and return it.

        `None` when it is not ours, or was raised or reported already.
        """
        with self._lock:
            for violation in self._violations:
                if violation.id == violation_id and not violation.raised:
                    violation.raised = True
                    return violation
        return None

    def messages(self) -> List[str]:
        """Return every violation's message, oldest first."""
        with self._lock:
            return [v.message for v in self._violations]

    def check(self) -> None:
        """Raise AssertionError for the violations no client raised.

        Raises
        ------
        AssertionError
            Some recorded violation was never raised in a client of this
            process; each is reported once.
        """
        with self._lock:
            unraised = [v for v in self._violations if not v.raised]
            for violation in unraised:
                violation.raised = True
        if unraised:
            lines = "\n".join(v.message for v in unraised)
            raise AssertionError(f"The mock saw calls out of order that no client raised:\n{lines}")

    def open(self) -> None:
        """Let clients of this process raise this book's violations."""
        install()
        with _books_lock:
            _books.add(self)

    def close(self) -> None:
        """Stop clients from raising this book's violations (the mock stopped)."""
        with _books_lock:
            _books.discard(self)


def observe(response: requests.Response) -> None:
    """Raise the violation a response is marked with, if a mock here recorded it.

    Parameters
    ----------
    response
        A response the client received.

    Raises
    ------
    AssertionError
        The response answers an out-of-order call recorded by a running mock.
    """
    violation_id = response.headers.get(VIOLATION_HEADER)
    if not violation_id:
        return
    with _books_lock:
        books = list(_books)
    for book in books:
        violation = book.claim(violation_id)
        if violation is not None:
            response.close()
            raise AssertionError(violation.message)


def install() -> None:
    """Register `observe` with the client's HTTP layer, once."""
    from .. import _http

    with _books_lock:
        if observe not in _http.response_observers:
            _http.response_observers.append(observe)
