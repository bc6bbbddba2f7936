"""The bookkeeping of queued execute requests, fed by hand."""

from __future__ import annotations

import datetime
import time
from typing import Any, Optional

from nublado_sync._messages import KernelMessage
from nublado_sync._models import ExecutionResult
from nublado_sync._pipeline import (
    LOST_REPLY_GRACE,
    CellDeadline,
    PipelineCollector,
    QueuedCell,
)


def message(channel: str, msg_type: str, parent: Optional[str], **content: Any) -> KernelMessage:
    return KernelMessage(
        channel=channel,
        header={"msg_type": msg_type, "msg_id": "m"},
        parent_header={"msg_id": parent} if parent else {},
        metadata={},
        content=content,
    )


def status(parent: Optional[str], state: str) -> KernelMessage:
    return message("iopub", "status", parent, execution_state=state)


def reply(parent: str, state: str = "ok") -> KernelMessage:
    return message("shell", "execute_reply", parent, status=state)


def pipeline(timeouts: list[Optional[float]]) -> tuple[PipelineCollector, list[Any]]:
    results: list[tuple[int, ExecutionResult]] = []
    given = iter(timeouts)

    def timeout() -> Optional[datetime.timedelta]:
        value = next(given)
        return None if value is None else datetime.timedelta(seconds=value)

    collector = PipelineCollector(
        ["r0", "r1", "r2"],
        [QueuedCell("a"), QueuedCell("b"), QueuedCell("c")],
        cell_timeout=timeout,
        on_result=lambda index, result: results.append((index, result)),
    )
    return collector, results


def test_results_in_order_and_clocks_start_with_each_cell() -> None:
    collector, results = pipeline([100.0, 200.0, 300.0])
    deadline = CellDeadline(collector)
    assert collector.owns("r2")
    assert not collector.owns("other")
    assert collector.deadline().timeout == datetime.timedelta(seconds=100)
    collector.feed(status("r0", "busy"))
    collector.feed(message("iopub", "stream", "r0", name="stdout", text="a\n"))
    collector.feed(status("r0", "idle"))
    # The next cell's busy comes before the first cell's reply (another
    # channel): its clock starts then.
    collector.feed(status("r1", "busy"))
    assert collector.current == 0
    collector.feed(reply("r0"))
    assert collector.current == 1
    assert [index for index, _ in results] == [0]
    assert results[0][1].stdout == "a\n"
    assert collector.deadline().timeout == datetime.timedelta(seconds=200)
    remaining = deadline.remaining()
    assert remaining is not None
    assert 100 < remaining <= 200
    # A failure with the rest aborted: the kernel answers each at once.
    collector.feed(message("iopub", "error", "r1", ename="E", evalue="v", traceback=[]))
    collector.feed(reply("r1", "error"))
    collector.feed(status("r1", "idle"))
    # The third cell's busy never came: its clock started with the end of
    # the second.
    assert collector.deadline().timeout == datetime.timedelta(seconds=300)
    collector.feed(reply("r2", "aborted"))
    collector.feed(status("r2", "idle"))
    assert collector.done
    assert [(index, result.status) for index, result in results] == [
        (0, "ok"),
        (1, "error"),
        (2, "aborted"),
    ]
    assert results[1][1].ename == "E"


def test_restart_concerns_the_current_cell() -> None:
    collector, _ = pipeline([None, None, None])
    assert collector.deadline().remaining() is None
    collector.feed(message("iopub", "stream", "other", name="stdout", text="not ours"))
    collector.feed(status(None, "restarting"))
    assert collector.kernel_died
    assert collector.collector.result().stdout == ""


def test_a_reply_lost_by_the_server_is_settled_from_iopub() -> None:
    # jupyter-server-documents can drop the shell replies of queued
    # requests while passing on their IOPub messages.
    collector, results = pipeline([None, None, None])
    for parent, extra in (("r0", []), ("r1", [message("iopub", "error", "r1", ename="E")])):
        collector.feed(status(parent, "busy"))
        collector.feed(message("iopub", "execute_input", parent, code="x"))
        for msg in extra:
            collector.feed(msg)
        collector.feed(status(parent, "idle"))
    # Aborted: no execute_input.
    collector.feed(status("r2", "busy"))
    collector.feed(status("r2", "idle"))
    assert results == []
    now = time.monotonic()
    assert collector.settle_lost_replies(now) == []
    wait = collector.next_settle(now)
    assert wait is not None
    assert 0 < wait <= LOST_REPLY_GRACE
    assert collector.settle_lost_replies(now + LOST_REPLY_GRACE) == [0, 1, 2]
    assert collector.done
    assert [result.status for _, result in results] == ["ok", "error", "aborted"]


def test_a_reconnect_is_counted_in_the_cell_it_happened_in() -> None:
    # The reply loop sets the running count after each reconnect.
    collector, results = pipeline([None, None, None])
    collector.feed(status("r0", "busy"))
    collector.feed(reply("r0"))
    collector.feed(status("r0", "idle"))
    collector.reconnects = 1
    collector.feed(status("r1", "busy"))
    collector.reconnects = 2
    collector.feed(reply("r1"))
    collector.feed(status("r1", "idle"))
    collector.feed(reply("r2"))
    collector.feed(status("r2", "idle"))
    assert collector.reconnects == 2
    assert [result.reconnects for _, result in results] == [0, 2, 0]


def test_each_cell_says_whether_a_reconnect_cost_it_output() -> None:
    # Three queued cells; the connection drops while the second runs and
    # the kernel's messages 7 and 8 (two of its outputs) are lost. Only
    # the second cell's result says so.
    from nublado_sync._reconnect import Continuity

    collector, results = pipeline([None, None, None])
    continuity = Continuity()
    collector.continuity = continuity
    number = iter(range(100))

    def feed(msg: KernelMessage, lost: bool = False) -> None:
        msg_id = f"a1b2-c3_4242_{next(number)}"
        if lost:
            return
        msg.header["msg_id"] = msg_id
        continuity.seen(msg_id)
        continuity.ours(msg_id)
        collector.feed(msg)

    feed(status("r0", "busy"))
    feed(reply("r0"))
    feed(status("r0", "idle"))
    feed(status("r1", "busy"))
    feed(message("iopub", "stream", "r1", name="stdout", text="before\n"))
    continuity.dropped()
    feed(message("iopub", "stream", "r1", name="stdout", text="gap\n"), lost=True)
    feed(message("iopub", "stream", "r1", name="stdout", text="gap\n"), lost=True)
    feed(message("iopub", "stream", "r1", name="stdout", text="after\n"))
    feed(reply("r1"))
    feed(status("r1", "idle"))
    feed(status("r2", "busy"))
    feed(message("iopub", "stream", "r2", name="stdout", text="c\n"))
    feed(reply("r2"))
    feed(status("r2", "idle"))
    assert [(index, result.output_lost) for index, result in results] == [
        (0, False),
        (1, True),
        (2, False),
    ]
    assert results[1][1].stdout == "before\nafter\n"
