"""The queued-cells loop: many execute requests sent at once, answered in turn.

The I/O side of `nublado_sync._pipeline` (which keeps the bookkeeping):
every cell is sent at once, then the replies are read until the kernel
answered them all, each cell's result handed over as it completes. The
session runs it holding its socket (see `JupyterLabSession._execute_queued`).
"""

from __future__ import annotations

import datetime
from typing import Callable, Optional, Sequence, Set

from ._deadline import Deadline
from ._exceptions import (
    NubladoError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoTimeoutError,
    NubladoWebSocketError,
)
from ._execution import OutputCallback
from ._kernel_link import KernelLink
from ._messages import execute_request
from ._pipeline import CellDeadline, PipelineCollector, QueuedCell, ResultCallback
from ._replies import ReplyWaiter

__all__ = ["run_queued"]

# Seconds the kernel is given, once a queue ran past its deadline and the
# kernel was interrupted, to answer the interrupted cell and abort the ones
# queued behind it before the connection closes. Closing at once lets the
# session's deletion follow while the kernel still handles the interrupt;
# jupyter_client interrupts a kernel again before shutting it down, and a
# second interrupt then can make the kernel run the next queued cell
# instead of aborting it.
_STOP_GRACE = 3.0


def run_queued(
    link: KernelLink,
    waiter: ReplyWaiter,
    cells: Sequence[QueuedCell],
    cell_timeout: Callable[[], Optional[datetime.timedelta]],
    on_output: Optional[OutputCallback],
    on_result: Optional[ResultCallback],
    on_start: Optional[Callable[[int], None]],
) -> None:
    """Send every cell at once, then wait until the kernel answered them all.

    The session's `_execute_queued` holds the session and the socket for the
    call; see there for what it raises.
    """
    requests = [
        execute_request(
            cell.code,
            session=link.client_id,
            username=link.username,
            stop_on_error=cell.stop_on_error,
            store_history=cell.store_history,
        )
        for cell in cells
    ]
    pipeline = PipelineCollector(
        [request.header["msg_id"] for request in requests],
        cells,
        cell_timeout=cell_timeout,
        on_output=on_output,
        on_result=on_result,
        on_start=on_start,
    )
    deadline = CellDeadline(pipeline)
    sent: Set[str] = set()
    try:
        waiter.prepare(pipeline.deadline())
        for request in requests:
            link.send_request(request, deadline)
            sent.add(request.header["msg_id"])
        link.logger.debug("Sent queued execute_requests", count=len(requests))
        waiter.await_reply(pipeline, deadline)
    except NubladoOutputLostError as e:
        # A reconnect lost the rest of the queue's messages; the
        # connection is fine again and the kernel idle.
        e.context = pipeline.cell.context or e.context
        raise
    except NubladoKernelDiedError as e:
        cell, collector = pipeline.cell, pipeline.collector
        e.code, e.context, e.started_at = (
            cell.code,
            cell.context or e.context,
            collector.started_at,
        )
        e.result = collector.result()
        raise
    except (NubladoTimeoutError, NubladoWebSocketError) as e:
        link.raise_if_aborted(e)
        cell, collector = pipeline.cell, pipeline.collector
        if pipeline.deadline().expired() and not link.gave_up:
            _stop_queue(link, pipeline, sent)
            waiter.raise_timeout(
                cell.code, cell.context, pipeline.deadline(), collector.started_at, collector, e
            )
        link.abandon(f"{type(e).__name__}")
        e.context, e.started_at = cell.context or e.context, collector.started_at
        raise
    except NubladoError as e:
        link.abandon(type(e).__name__)
        e.context = pipeline.cell.context or e.context
        raise
    except BaseException as e:
        # KeyboardInterrupt (Ctrl-C, or SIGTERM under the command), or an
        # exception from a callback. Closing at once would leave the cells
        # queued behind to the kernel's shutdown, whose own interrupt can
        # start the next one (see _STOP_GRACE); stop the queue first. A
        # second Ctrl-C cuts the wait short, and the connection closes in
        # any case.
        reason, stopped = f"interrupted by {type(e).__name__}", False
        try:
            if link.socket.connected and not link.aborted:
                _stop_queue(link, pipeline, sent)
                stopped = True
        finally:
            # After _stop_queue the kernel was interrupted once; a second
            # interrupt is what this avoids.
            if stopped:
                link.close(reason)
            else:
                link.abandon(reason)
        raise


def _stop_queue(link: KernelLink, pipeline: PipelineCollector, sent: Set[str]) -> None:
    """Interrupt the kernel and wait, briefly, until it answered every cell left.

    The interrupted cell fails and the kernel aborts the cells behind it
    (each was sent with ``stop_on_error`` unless allowed to fail); their
    messages are read and dropped, as a cell run on its own drops what
    comes after its deadline. Gives up after `_STOP_GRACE` seconds or at
    the first error: the caller closes the connection next in any case.
    """
    waiting = {
        collector.msg_id
        for collector in pipeline.collectors[pipeline.current :]
        if collector.msg_id in sent and not collector.replied
    }
    grace = Deadline(datetime.timedelta(seconds=_STOP_GRACE))
    if not sent:
        return
    try:
        link.send_interrupt()
        while waiting and not grace.expired():
            msg = link.socket.recv(grace.bound(_STOP_GRACE), ack=True)
            if msg is not None and msg.msg_type == "execute_reply":
                waiting.discard(msg.parent_id or "")
    except NubladoError as e:
        link.logger.debug("Could not stop the queue", error=e.message)
    if waiting:
        link.logger.warning(
            "The kernel did not answer every queued cell after the interrupt;"
            " some may still run until the kernel is shut down",
            unanswered=len(waiting),
        )
