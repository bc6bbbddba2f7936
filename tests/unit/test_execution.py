"""The reply bookkeeping of one execute_request, message by message."""

from __future__ import annotations

from typing import Any

from nublado_sync._execution import ExecutionCollector
from nublado_sync._messages import KernelMessage


def msg(
    channel: str, msg_type: str, content: dict[str, Any], parent: str | None = "req"
) -> KernelMessage:
    parent_header = {"msg_id": parent} if parent else {}
    return KernelMessage(channel, {"msg_type": msg_type, "msg_id": "x"}, parent_header, {}, content)


def reply(status: str = "ok", **extra: Any) -> KernelMessage:
    return msg("shell", "execute_reply", {"status": status, "execution_count": 3, **extra})


IDLE = msg("iopub", "status", {"execution_state": "idle"})


def test_done_needs_reply_and_idle_in_either_order() -> None:
    for first, second in ((reply(), IDLE), (IDLE, reply())):
        collector = ExecutionCollector("req", "code")
        collector.feed(first)
        assert not collector.done
        collector.feed(second)
        assert collector.done


def test_output_after_reply_is_kept() -> None:
    collector = ExecutionCollector("req", "code")
    collector.feed(reply())
    collector.feed(msg("iopub", "stream", {"name": "stdout", "text": "late\n"}))
    collector.feed(IDLE)
    assert collector.result().stdout == "late\n"


def test_foreign_and_unknown_messages_are_ignored() -> None:
    collector = ExecutionCollector("req", "code")
    collector.feed(msg("iopub", "stream", {"name": "stdout", "text": "other"}, parent="else"))
    collector.feed(msg("iopub", "status", {"execution_state": "idle"}, parent="else"))
    collector.feed(msg("iopub", "iopub_welcome", {}, parent=None))
    collector.feed(msg("iopub", "brand_new_type", {"x": 1}))
    collector.feed(msg("iopub", "status", {"execution_state": "busy"}, parent=None))
    assert not collector.done
    assert not collector.kernel_died
    assert collector.result().stdout == ""


def test_streams_results_and_displays() -> None:
    seen: list[dict[str, Any]] = []
    collector = ExecutionCollector("req", "code", seen.append)
    collector.feed(msg("iopub", "stream", {"name": "stdout", "text": "a"}))
    collector.feed(msg("iopub", "stream", {"name": "stdout", "text": "b"}))
    collector.feed(msg("iopub", "stream", {"name": "stderr", "text": "warn"}))
    collector.feed(msg("iopub", "display_data", {"data": {"text/plain": "fig"}, "metadata": {}}))
    collector.feed(
        msg(
            "iopub",
            "execute_result",
            {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 3},
        )
    )
    collector.feed(reply())
    collector.feed(IDLE)
    result = collector.result()
    assert result.stdout == "ab"
    assert result.stderr == "warn"
    assert result.result == {"text/plain": "42"}
    assert result.displays == [{"text/plain": "fig"}]
    assert result.status == "ok"
    assert result.execution_count == 3
    assert [o["output_type"] for o in result.outputs] == [
        "stream",
        "stream",
        "display_data",
        "execute_result",
    ]
    assert result.outputs[0] == {"output_type": "stream", "name": "stdout", "text": "ab"}
    assert [o.get("text") for o in seen[:3]] == ["a", "b", "warn"]
    assert result.duration is not None


def test_error_fields() -> None:
    collector = ExecutionCollector("req", "1/0")
    tb = ["\x1b[31mZeroDivisionError\x1b[0m", "division by zero"]
    collector.feed(
        msg(
            "iopub",
            "error",
            {"ename": "ZeroDivisionError", "evalue": "division by zero", "traceback": tb},
        )
    )
    collector.feed(
        reply("error", ename="ZeroDivisionError", evalue="division by zero", traceback=tb)
    )
    collector.feed(IDLE)
    result = collector.result()
    assert result.status == "error"
    assert result.ename == "ZeroDivisionError"
    assert result.traceback == tb
    assert result.error_text is not None
    assert "division by zero" in result.error_text


def test_aborted_has_no_error_fields() -> None:
    collector = ExecutionCollector("req", "x")
    collector.feed(reply("aborted"))
    collector.feed(IDLE)
    result = collector.result()
    assert result.status == "aborted"
    assert result.ename is None
    assert result.error_text is None


def test_rate_limit_notice_sets_output_lost() -> None:
    collector = ExecutionCollector("req", "x")
    notice = "IOPub data rate exceeded.\nThe Jupyter server will temporarily stop sending output"
    collector.feed(msg("iopub", "stream", {"name": "stderr", "text": notice}))
    assert collector.result().output_lost


def test_unparented_restart_status_means_kernel_died() -> None:
    for state in ("restarting", "dead", "starting"):
        collector = ExecutionCollector("req", "x")
        collector.feed(msg("iopub", "status", {"execution_state": state}, parent=None))
        assert collector.kernel_died


def test_clear_output_drops_displays_but_keeps_stdout() -> None:
    collector = ExecutionCollector("req", "x")
    collector.feed(msg("iopub", "stream", {"name": "stdout", "text": "kept"}))
    collector.feed(msg("iopub", "display_data", {"data": {"text/plain": "gone"}}))
    collector.feed(msg("iopub", "clear_output", {"wait": False}))
    result = collector.result()
    assert result.stdout == "kept"
    assert result.displays == []


def test_many_small_prints_are_joined_once() -> None:
    collector = ExecutionCollector("req", "x")
    for i in range(20000):
        collector.feed(msg("iopub", "stream", {"name": "stdout", "text": f"{i}\n"}))
    result = collector.result()
    assert result.stdout.count("\n") == 20000
    assert len(result.outputs) == 1
