"""The retry policy: how requests that failed for a passing reason are tried again.

A small immutable value, like urllib3's ``Retry``; `_urllib3_retry` applies
it to the HTTP session, and the flow's non-idempotent steps (the spawn form,
session creation) use its pauses in their own state-checking loops.
"""

from __future__ import annotations

import datetime
import random
from dataclasses import dataclass
from typing import Optional

from ._exceptions import NubladoUsageError

__all__ = ["IDEMPOTENT", "RETRY_STATUSES", "RetryPolicy"]

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "DELETE"})
"""Methods repeated as they are: they change nothing, or deleting twice is
the same as deleting once."""

RETRY_STATUSES = frozenset({502, 503, 504})
"""Statuses that say "try again later": a gateway or ingress whose backend is
restarting, or a server that is briefly overloaded."""


@dataclass(frozen=True)
class RetryPolicy:
    """How requests that failed for a passing reason are tried again.

    A request is retried when the connection failed (refused, reset,
    dropped before an answer) or when the answer was 502, 503 or 504, or 429
    or 503 with ``Retry-After``. Only requests that are safe to repeat are
    repeated as they are (``GET`` and ``DELETE``: the hub and lab pages,
    the login and OAuth hops, the APIs that read or delete); a request that
    never reached the server (connection refused) is safe whatever its
    method. The steps that change something (the spawn form, creating a
    session) first look at the server's state and then either go on or
    send again.

    Retries never stretch a deadline: one request and all its retries end
    within ``deadline`` (by default the request's own timeout, the
    client's ``timeout``), and within the deadline of the call that made
    it (such as `NubladoClient.wait_for_spawn`'s ``timeout``). A pause that
    would end past the deadline is not taken: the last failure is reported
    instead.

    Parameters
    ----------
    retries
        Most retries of one request after its first try; 0 turns retrying
        off.
    backoff
        Pause before the first retry; it doubles for each further retry, up
        to ``max_backoff``.
    max_backoff
        Longest pause between two tries.
    jitter
        Fraction of each pause drawn at random (0 to 1): a pause is between
        ``(1 - jitter)`` times and once the backoff, so clients that failed
        together do not come back together.
    deadline
        Time one request may take, its retries and pauses included;
        `None` for the request's own timeout.

    Raises
    ------
    NubladoUsageError
        A value is out of range.

    Examples
    --------
    The default rides through a proxy restart or a few seconds of 503 from
    an ingress; a job that must survive a hub restart of a minute gives
    each request longer::

        RetryPolicy(deadline=datetime.timedelta(minutes=2))
    """

    retries: int = 10
    backoff: datetime.timedelta = datetime.timedelta(seconds=0.5)
    max_backoff: datetime.timedelta = datetime.timedelta(seconds=8)
    jitter: float = 0.5
    deadline: Optional[datetime.timedelta] = None

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise NubladoUsageError("RetryPolicy retries must be a whole number, 0 or more")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, datetime.timedelta) or value.total_seconds() < 0:
                raise NubladoUsageError(f"RetryPolicy {name} must be a datetime.timedelta >= 0")
        if isinstance(self.jitter, bool) or not isinstance(self.jitter, (int, float)):
            raise NubladoUsageError("RetryPolicy jitter must be a number from 0 to 1")
        if not 0 <= self.jitter <= 1:
            raise NubladoUsageError("RetryPolicy jitter must be a number from 0 to 1")
        if self.deadline is not None and (
            not isinstance(self.deadline, datetime.timedelta) or self.deadline.total_seconds() <= 0
        ):
            raise NubladoUsageError("RetryPolicy deadline must be a positive datetime.timedelta")

    @classmethod
    def off(cls) -> RetryPolicy:
        """Return a policy that never retries.

        Returns
        -------
        RetryPolicy
            A policy with ``retries=0``.
        """
        return cls(retries=0)

    def pause(self, retry: int) -> float:
        """Return the pause before a retry, in seconds, jitter included.

        Parameters
        ----------
        retry
            Which retry: 1 for the first.

        Returns
        -------
        float
            Seconds to wait.
        """
        base: float = self.backoff.total_seconds() * 2.0 ** max(retry - 1, 0)
        base = min(base, self.max_backoff.total_seconds())
        # Random spread between clients, not a secret.
        return base * (1 - self.jitter * random.random())  # noqa: S311

    def request_deadline(self, timeout: float) -> float:
        """Return how long one request may take, retries included, in seconds.

        Parameters
        ----------
        timeout
            The request's own timeout.

        Returns
        -------
        float
            ``deadline`` when set, else ``timeout``.
        """
        return timeout if self.deadline is None else self.deadline.total_seconds()
