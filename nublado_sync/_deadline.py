"""One monotonic deadline shared by every step of an operation."""

from __future__ import annotations

import datetime
import time
from typing import Optional

__all__ = ["Deadline"]


class Deadline:
    """A point in monotonic time, or none at all.

    Parameters
    ----------
    timeout
        Time allowed from now; `None` for no deadline.
    """

    def __init__(self, timeout: Optional[datetime.timedelta]) -> None:
        self.timeout = timeout
        self._end = None if timeout is None else time.monotonic() + timeout.total_seconds()

    def remaining(self) -> Optional[float]:
        """Seconds left (never negative), or `None` without a deadline."""
        if self._end is None:
            return None
        return max(self._end - time.monotonic(), 0.0)

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self._end is not None and time.monotonic() >= self._end

    def bound(self, seconds: float) -> float:
        """Return ``seconds``, cut to the time remaining."""
        remaining = self.remaining()
        return seconds if remaining is None else min(seconds, remaining)
