"""Several execute requests queued in one kernel: the bookkeeping, no I/O.

A notebook's code cells can be sent all at once, as JupyterLab's "Run All"
sends them: the kernel queues the requests and goes from one cell to the
next without waiting for the network. The kernel runs them strictly in
order, so at any time one request is *current*: the first one not yet
complete. This module routes each message to its request's collector by
its parent id, keeps every cell's deadline (which starts when that cell
starts, not when it was sent), and hands each cell's result over, in
order, as it completes.

When to start a queued cell's clock: at its own ``busy`` status, which
the kernel publishes as it takes the request up, or when the cell before
it completed (its reply and its ``idle`` are in), whichever comes first.
The first covers the usual case; the second a ``busy`` that never comes
(lost to a rate limit, say), since the kernel moves on to the next request
as soon as one is done. The first cell's clock starts when it is sent, as
a lone request's does.

What ends the queue is the kernel's business: a cell sent with
``stop_on_error`` that fails makes ipykernel abort every request queued
behind it (each comes back with status ``aborted``), while one sent
without it lets the next cell run.
"""

from __future__ import annotations

import datetime
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

from ._deadline import Deadline
from ._execution import ExecutionCollector, MessageCallback, OutputCallback
from ._messages import KernelMessage
from ._models import CodeContext, ExecutionResult
from ._reconnect import Continuity

__all__ = ["CellDeadline", "PipelineCollector", "QueuedCell", "ResultCallback"]

# How long a cell whose final idle status is in may wait for its reply
# before the reply counts as lost. jupyter-server-documents (0.3) can drop
# the shell replies of requests queued behind the first one while passing
# their IOPub messages on; the reply normally comes within milliseconds of
# the idle status.
LOST_REPLY_GRACE = 2.0

ResultCallback = Callable[[int, ExecutionResult], None]
"""Called with a queued cell's index and result as it completes, in order."""


@dataclass(frozen=True)
class QueuedCell:
    """One request of a queue: code and how the kernel should treat it.

    Parameters
    ----------
    code
        Code to run.
    context
        Where the code came from, for exceptions.
    stop_on_error
        Whether an error in this cell makes the kernel abort the requests
        queued behind it.
    store_history
        Whether the kernel numbers the request in its history.
    on_message
        Called with each message answering the request (see
        `JupyterLabSession.execute`).
    """

    code: str
    context: Optional[CodeContext] = None
    stop_on_error: bool = True
    store_history: bool = False
    on_message: Optional[MessageCallback] = None


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


def _is_busy(msg: KernelMessage) -> bool:
    return (
        msg.channel == "iopub"
        and msg.msg_type == "status"
        and msg.content.get("execution_state") == "busy"
    )


class PipelineCollector:
    """Accumulates the messages answering a queue of execute requests.

    Parameters
    ----------
    msg_ids
        Ids of the requests, in the order sent.
    cells
        The cells they carry, in the same order.
    cell_timeout
        Gives each cell's time allowed as it starts (`None` for none);
        called once per cell.
    on_output
        Called with each output of any cell as it arrives.
    on_result
        Called with each cell's index and result as it completes, in
        order; what it raises goes to the caller of `feed`.
    on_start
        Called with each cell's index as it starts (the first one at once).
    """

    def __init__(
        self,
        msg_ids: Sequence[str],
        cells: Sequence[QueuedCell],
        *,
        cell_timeout: Callable[[], Optional[datetime.timedelta]],
        on_output: Optional[OutputCallback] = None,
        on_result: Optional[ResultCallback] = None,
        on_start: Optional[Callable[[int], None]] = None,
    ) -> None:
        if len(msg_ids) != len(cells) or not cells:
            raise ValueError("one message id per cell, and at least one cell")
        self.cells = list(cells)
        self.collectors = [
            ExecutionCollector(msg_id, cell.code, on_output, cell.on_message)
            for msg_id, cell in zip(msg_ids, cells)
        ]
        self._index: Dict[str, int] = {msg_id: i for i, msg_id in enumerate(msg_ids)}
        self._cell_timeout = cell_timeout
        self._on_result = on_result
        self._on_start = on_start
        self._deadlines: List[Optional[Deadline]] = [None] * len(cells)
        self._idle_at: Dict[int, float] = {}
        self._reconnects = 0
        # Set by the session's reply loop once it has all it will get.
        self.reconnect_lost = False
        # Set by the session's reply loop: what it knows of messages lost
        # to reconnects, asked as each cell completes so that the cell's
        # own result says whether it lost output (a cell run on its own
        # is told once its call is over).
        self.continuity: Optional[Continuity] = None
        # The id of the message that completed the last cell.
        self._completed_by: Optional[str] = None
        self.current = 0
        self._start(0)

    @property
    def done(self) -> bool:
        """Every request's reply and final ``idle`` status arrived."""
        return self.current >= len(self.collectors)

    @property
    def collector(self) -> ExecutionCollector:
        """The current request's collector (the last one once all are done)."""
        return self.collectors[min(self.current, len(self.collectors) - 1)]

    @property
    def cell(self) -> QueuedCell:
        """The current request's cell (the last one once all are done)."""
        return self.cells[min(self.current, len(self.cells) - 1)]

    @property
    def reconnects(self) -> int:
        """How many times the WebSocket was opened again during the queue."""
        return self._reconnects

    @reconnects.setter
    def reconnects(self, value: int) -> None:
        # Set by the session's reply loop after a reconnect (a running
        # count): the cell running then is the one it happened in, and
        # its result says so, as a cell run on its own would.
        if not self.done:
            self.collectors[self.current].reconnects += value - self._reconnects
        self._reconnects = value

    @property
    def replied(self) -> bool:
        """Every request's reply arrived (all are complete)."""
        return self.done

    @property
    def code(self) -> str:
        """The current request's code."""
        return self.cell.code

    def result(self) -> ExecutionResult:
        """Build the current request's result from what arrived so far."""
        return self.collector.result()

    @property
    def kernel_died(self) -> bool:
        """The kernel was replaced while the current request ran."""
        return self.collector.kernel_died

    def deadline(self) -> Deadline:
        """Return the current cell's deadline."""
        deadline = self._deadlines[min(self.current, len(self.collectors) - 1)]
        assert deadline is not None  # the current cell has always started
        return deadline

    def owns(self, parent: Optional[str]) -> bool:
        """Whether a message with this parent id answers one of the requests."""
        return parent is not None and parent in self._index

    def feed(self, msg: KernelMessage) -> None:
        """Take one message from the kernel; ignore what is not ours."""
        parent = msg.parent_id
        if parent is None:
            # Unparented: a restart status concerns the request running now.
            if not self.done:
                self.collectors[self.current].feed(msg)
            return
        index = self._index.get(parent)
        if index is None:
            return
        if self._deadlines[index] is None and _is_busy(msg):
            self._start(index)
        self.collectors[index].feed(msg)
        collector = self.collectors[index]
        if collector.idle and not collector.replied and index not in self._idle_at:
            self._idle_at[index] = time.monotonic()
        self._advance(msg.msg_id)

    def settle_lost_replies(self, now: float) -> List[int]:
        """Complete the cells whose reply has not come long after their idle status.

        Returns
        -------
        list of int
            Indexes of the cells completed without their reply.
        """
        settled = []
        while not self.done:
            since = self._idle_at.get(self.current)
            collector = self.collectors[self.current]
            if since is None or collector.replied or now - since < LOST_REPLY_GRACE:
                break
            collector.settle_without_reply()
            settled.append(self.current)
            self._advance(None)
        return settled

    def next_settle(self, now: float) -> Optional[float]:
        """Seconds until `settle_lost_replies` may complete the current cell."""
        since = None if self.done else self._idle_at.get(self.current)
        return None if since is None else max(since + LOST_REPLY_GRACE - now, 0.0)

    def _advance(self, completed_by: Optional[str]) -> None:
        while not self.done and self.collectors[self.current].done:
            finished = self.current
            collector = self.collectors[finished]
            continuity = self.continuity
            if continuity is not None and continuity.reconnects:
                collector.reconnect_lost = continuity.lost_between(self._completed_by, completed_by)
            self._completed_by = completed_by or self._completed_by
            result = collector.result()
            self.current += 1
            if not self.done and self._deadlines[self.current] is None:
                self._start(self.current)
            if self._on_result is not None:
                self._on_result(finished, result)

    def _start(self, index: int) -> None:
        if self._on_start is not None:
            self._on_start(index)
        self._deadlines[index] = Deadline(self._cell_timeout())
        self.collectors[index].started_at = _utcnow()


class CellDeadline(Deadline):
    """The deadline of whichever cell of a queue is current.

    Handed to the session's reply loop, which asks it again at every turn,
    so each cell is held to its own deadline as the queue advances.
    """

    def __init__(self, pipeline: PipelineCollector) -> None:
        super().__init__(None)
        self._pipeline = pipeline

    def remaining(self) -> Optional[float]:
        """Seconds left to the current cell, or `None` without a deadline."""
        return self._pipeline.deadline().remaining()

    def expired(self) -> bool:
        """Whether the current cell's deadline has passed."""
        return self._pipeline.deadline().expired()

    def bound(self, seconds: float) -> float:
        """Return ``seconds``, cut to the current cell's time remaining."""
        return self._pipeline.deadline().bound(seconds)
