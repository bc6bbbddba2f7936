"""Reconnecting a dropped kernel WebSocket: the policy, and telling what was lost.

The policy is a small immutable value, like urllib3's ``Retry``. The
continuity check knows no I/O: the session feeds it every message of a
call and asks, once the call is complete, whether a reconnect may have
cost output.
"""

from __future__ import annotations

import collections
import datetime
import itertools
import re
from dataclasses import dataclass
from typing import Deque, List, Optional, Set, Tuple, TypeVar, Union

from ._exceptions import NubladoUsageError

__all__ = [
    "DEFAULT_RECONNECT",
    "DROP_CLOSE_CODES",
    "Continuity",
    "ReconnectPolicy",
    "check_reconnect_policy",
]

DROP_CLOSE_CODES = frozenset({1001, 1006, 1011, 1012, 1013, 1014})
"""Close codes after which reconnecting can help: going away, abnormal
closure, server error, service restart, try again later, bad gateway. A
close without a code (tornado's ping timeout) counts too; a normal closure
(1000), a policy violation or a message too big do not."""


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a session reconnects its kernel WebSocket after it drops.

    When the connection drops (reset, closed without a close frame, or
    closed with code 1001, 1006, 1011, 1012, 1013 or 1014) the session
    opens a new WebSocket to the same kernel, with the same connection id,
    and goes on collecting the running request's output and reply. The
    first attempt is made at once; before each later one the session waits
    ``first_delay``, then ``multiplier`` times longer each time, up to
    ``max_delay``, each pause shortened at random by up to ``jitter`` of
    itself so that many clients cut off together do not come back in step.
    A call's deadline bounds all of it.

    Parameters
    ----------
    max_attempts
        Connection attempts before giving up (at least 1). A connection made
        again that drops before the kernel sent anything on it does not
        start the count over: its attempt counts.
    first_delay
        Pause before the second attempt.
    max_delay
        Longest pause between two attempts.
    multiplier
        Growth of the pause from one attempt to the next (at least 1).
    jitter
        Fraction (0 to 1) by which each pause is shortened at random.

    Raises
    ------
    NubladoUsageError
        A value is out of range.
    """

    max_attempts: int = 8
    first_delay: datetime.timedelta = datetime.timedelta(seconds=0.25)
    max_delay: datetime.timedelta = datetime.timedelta(seconds=4)
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise NubladoUsageError("ReconnectPolicy.max_attempts must be an int")
        if self.max_attempts < 1:
            raise NubladoUsageError("ReconnectPolicy.max_attempts must be at least 1")
        for name in ("first_delay", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, datetime.timedelta) or value.total_seconds() < 0:
                raise NubladoUsageError(
                    f"ReconnectPolicy.{name} must be a timedelta of zero or more"
                )
        if not isinstance(self.multiplier, (int, float)) or self.multiplier < 1:
            raise NubladoUsageError("ReconnectPolicy.multiplier must be a number of at least 1")
        if not isinstance(self.jitter, (int, float)) or not 0 <= self.jitter <= 1:
            raise NubladoUsageError("ReconnectPolicy.jitter must be between 0 and 1")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number ``attempt`` (counting from 1).

        Parameters
        ----------
        attempt
            The attempt about to be made.

        Returns
        -------
        float
            Zero for the first attempt, then the backoff with its jitter.
        """
        if attempt <= 1:
            return 0.0
        import random  # on first use: a reconnect is rare, a cold start is not

        pause = self.first_delay.total_seconds() * self.multiplier ** (attempt - 2)
        pause = min(pause, self.max_delay.total_seconds())
        return pause * (1.0 - self.jitter * random.random())  # noqa: S311 (not crypto)

    def worst_case(self) -> float:
        """Total seconds of pauses when every attempt fails (without jitter).

        Returns
        -------
        float
            The sum of the pauses before the attempts.
        """
        total = 0.0
        pause = self.first_delay.total_seconds()
        for _ in range(self.max_attempts - 1):
            total += min(pause, self.max_delay.total_seconds())
            pause *= self.multiplier
        return total


# Message ids of jupyter_client's Session (the kernel's side):
# "<session>_<pid>_<n>", n counting every message the kernel process sends
# on any channel.
_COUNTED_ID = re.compile(r"^(.+_\d+)_(\d+)$")

# Message ids remembered for removing duplicates after a reconnect.
_RECENT_IDS = 4096

_Default = TypeVar("_Default", int, None)


def _counter(msg_id: str) -> Optional[Tuple[str, int]]:
    match = _COUNTED_ID.match(msg_id)
    if match is None:
        return None
    return match.group(1), int(match.group(2))


DEFAULT_RECONNECT = ReconnectPolicy()
"""The policy a session uses unless told otherwise."""


def check_reconnect_policy(value: object, user: Optional[str] = None) -> Optional[ReconnectPolicy]:
    """Return ``value`` if it is a `ReconnectPolicy` or `None`.

    Raises
    ------
    NubladoUsageError
        It is something else.
    """
    if value is not None and not isinstance(value, ReconnectPolicy):
        raise NubladoUsageError("reconnect must be a ReconnectPolicy or None", user)
    return value


class Continuity:
    """Tells, across reconnects within one call, duplicates and lost messages.

    Stock jupyter_server replays what the kernel sent while no WebSocket was
    connected, to a connection with the same ``session_id``; other servers
    (jupyter-server-documents) keep nothing. The kernel numbers every
    message it sends (jupyter_client's message ids end in a counter), so a
    number missing between the last message before the drop and the last
    one received means the kernel sent something that never arrived. Where
    the ids carry no counter, any reconnect counts as a possible loss.
    """

    def __init__(self) -> None:
        self.reconnects = 0
        self._recent: Deque[str] = collections.deque(maxlen=_RECENT_IDS)
        self._recent_set: Set[str] = set()
        # Message numbers are read only from the first drop on: until then
        # nothing can be lost, and parsing every id costs a busy client
        # time on every message. The drop reads the numbers so far from
        # the ids remembered.
        self._source: Optional[str] = None
        # Since the first drop: the counter before it, and those seen since.
        self._since: Optional[int] = None
        self._after: Set[int] = set()
        # The highest number among the call's own messages since the first
        # drop: what the kernel sends after the call's last message is not
        # the call's (our post-reconnect barrier, or the stock server's own
        # kernel_info "nudge" on reconnecting, whose reply goes to a socket
        # of its own and never reaches us), and may arrive after the call
        # is over.
        self._last_ours = -1
        self._uncounted = False

    def seen(self, msg_id: str) -> bool:
        """Record a message; `True` when it was already received (drop it)."""
        if msg_id in self._recent_set:
            return True
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(msg_id)
        self._recent_set.add(msg_id)
        if self._since is None:
            return False
        number = self._number(msg_id, None)
        if number is not None and number > self._since:
            self._after.add(number)
        return False

    def ours(self, msg_id: str) -> None:
        """Note that a message received belongs to the call.

        Only numbers up to the call's last message count in `lost`.
        """
        if self._since is None:
            # Before any drop every number is at most the drop's own.
            return
        number = self._number(msg_id, None)
        if number is not None:
            self._last_ours = max(self._last_ours, number)

    def dropped(self) -> None:
        """Note that the connection dropped and was opened again."""
        self.reconnects += 1
        if self._since is not None:
            return
        counted = [c for c in map(_counter, self._recent) if c is not None]
        if not counted:
            # Ids without numbers (or none yet): any drop may have cost some.
            self._uncounted = True
            self._since = -1
            return
        # Another kernel process (a restart) numbers from scratch; the
        # kernel-died checks report that, and its numbers do not count.
        self._source = counted[0][0]
        self._since = max(number for source, number in counted if source == self._source)

    def lost(self) -> bool:
        """Whether a reconnect may have cost messages of the kernel.

        Call once the call has all it will get.
        """
        if self._since is None:
            return False
        if self._uncounted or self._source is None:
            return True
        return bool(self.missing(limit=1))

    def lost_between(self, after: Optional[str], upto: Optional[str]) -> bool:
        """Whether a reconnect may have cost messages sent between two of ours.

        For one cell of a queue: ``after`` is the message that completed the
        cell before it (`None` for the first cell), ``upto`` the one that
        completed this cell (`None`: up to the call's last message so far).
        The kernel runs queued cells in turn, so every message of the cell
        is numbered in between.
        """
        if self._since is None:
            return False
        if self._uncounted or self._source is None:
            return True
        low = max(self._since, self._number(after, -1))
        high = self._number(upto, self._last_ours)
        return any(n not in self._after for n in range(low + 1, high))

    def _number(self, msg_id: Optional[str], default: _Default) -> Union[int, _Default]:
        counted = None if msg_id is None else _counter(msg_id)
        if counted is None or counted[0] != self._source:
            return default
        return counted[1]

    def missing(self, limit: int = 10) -> List[int]:
        """Return the first ``limit`` message numbers missing since the first drop."""
        if self._since is None or self._source is None:
            return []
        gaps = (n for n in range(self._since + 1, self._last_ours) if n not in self._after)
        return list(itertools.islice(gaps, limit))
