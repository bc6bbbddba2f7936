"""Applying a `RetryPolicy` to a requests session with urllib3's ``Retry``.

Imported on first use by `_http` (urllib3 is part of requests' import).

urllib3 retries inside one ``urlopen`` call, which knows nothing of the
request's deadline. The deadline is therefore kept per thread for the
duration of the request (`request_deadline`), and two urllib3 hooks read it:
`PolicyRetry.increment` gives up instead of pausing past it, and
`DeadlineTimeout.clone` (urllib3 clones the timeout for every try) cuts each
try's connect and read timeouts to the time left.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Optional

from urllib3.exceptions import InvalidHeader, MaxRetryError, ResponseError
from urllib3.util.retry import Retry
from urllib3.util.timeout import Timeout

from ._reasons import transport_failure
from ._redact import redact_url
from ._retry import IDEMPOTENT, RETRY_STATUSES, RetryPolicy

if TYPE_CHECKING:
    from types import TracebackType

    from urllib3.connectionpool import ConnectionPool
    from urllib3.response import BaseHTTPResponse

    from ._logging import Logger

__all__ = ["DeadlineTimeout", "PolicyRetry", "request_deadline"]


_local = threading.local()


@contextlib.contextmanager
def request_deadline(seconds: float) -> Iterator[None]:
    """Give the request sent in this block a deadline ``seconds`` from now."""
    previous = getattr(_local, "end", None), getattr(_local, "tries", 0)
    _local.end = time.monotonic() + seconds
    _local.tries = 0
    try:
        yield
    finally:
        _local.end, _local.tries = previous


def _remaining() -> Optional[float]:
    end: Optional[float] = getattr(_local, "end", None)
    return None if end is None else end - time.monotonic()


class DeadlineTimeout(Timeout):
    """A urllib3 timeout whose retries are cut to the request's deadline.

    The first try keeps its timeouts: they are the caller's (a notebook run
    waits an hour for its answer, whatever the retry deadline).
    """

    def clone(self) -> Timeout:
        connect, read = self._connect, self._read
        _local.tries = getattr(_local, "tries", 0) + 1
        remaining = _remaining()
        if remaining is not None and _local.tries > 1:
            # urllib3 refuses a timeout of 0; a try with no time left fails
            # at once, as it should.
            remaining = max(remaining, 0.001)
            if isinstance(connect, (int, float)):
                connect = min(connect, remaining)
            if isinstance(read, (int, float)):
                read = min(read, remaining)
        return Timeout(connect=connect, read=read, total=self.total)


class PolicyRetry(Retry):
    """urllib3's ``Retry`` configured from a `RetryPolicy`, with its pauses.

    It never follows a redirect (`HTTPSession.fetch` does that by hand, to
    keep the token inside the hub's URL space), retries only connection
    failures and the statuses that say "later", logs each retry, and gives
    up rather than pause past the request's deadline.
    """

    # Retry-After is honoured on these; 413 (urllib3's third) is no
    # invitation to send the same body again.
    RETRY_AFTER_STATUS_CODES = frozenset({429, 503})

    policy: RetryPolicy = RetryPolicy.off()
    logger: Optional[Logger] = None
    _pause: float = 0.0

    @classmethod
    def from_policy(cls, policy: RetryPolicy, logger: Logger) -> PolicyRetry:
        """Build the ``Retry`` to mount on a session.

        Parameters
        ----------
        policy
            The policy to apply.
        logger
            Where each retry is logged.

        Returns
        -------
        PolicyRetry
            The retry configuration.
        """
        retry = cls(
            total=policy.retries,
            # Other failures (TLS verification, a malformed answer) will
            # fail the same way again.
            other=0,
            redirect=False,
            status_forcelist=RETRY_STATUSES,
            allowed_methods=IDEMPOTENT,
            # The last answer is handed back, and reported as the status
            # error it is.
            raise_on_status=False,
            respect_retry_after_header=True,
        )
        retry.policy = policy
        retry.logger = logger
        return retry

    def new(self, **kw: Any) -> PolicyRetry:
        retry = super().new(**kw)
        retry.policy = self.policy
        retry.logger = self.logger
        return retry

    def increment(
        self,
        method: Optional[str] = None,
        url: Optional[str] = None,
        response: Optional[BaseHTTPResponse] = None,
        error: Optional[Exception] = None,
        _pool: Optional[ConnectionPool] = None,
        _stacktrace: Optional[TracebackType] = None,
    ) -> PolicyRetry:
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        pause = None
        if response is not None:
            with contextlib.suppress(InvalidHeader):
                pause = self.get_retry_after(response)
        if pause is None:
            pause = self.policy.pause(len(retry.history))
        remaining = _remaining()
        reason = error or ResponseError(f"status {response.status if response else '?'}")
        if remaining is not None and pause >= remaining:
            # The pause would end past the deadline: report this failure now.
            raise MaxRetryError(_pool, url or "", reason) from reason  # type: ignore[arg-type]
        retry._pause = pause
        if response is not None:
            # urllib3 reads the rest of a retried answer to reuse the
            # connection; a body that never ends would hold the retry.
            with contextlib.suppress(Exception):
                response.close()
        if self.logger is not None:
            pool = _pool
            where = ""
            if pool is not None:
                where = f"{getattr(pool, 'scheme', 'http')}://{pool.host}:{pool.port}"
            self.logger.info(
                "Retrying HTTP request",
                method=method,
                url=redact_url(where + (url or "")),
                reason=(
                    f"status {response.status}"
                    if response is not None
                    else transport_failure(reason, redact_url(where + (url or "")))
                ),
                retry=len(retry.history),
                pause=round(pause, 3),
            )
        return retry

    def sleep(self, response: Optional[BaseHTTPResponse] = None) -> None:
        if self._pause > 0:
            time.sleep(self._pause)
