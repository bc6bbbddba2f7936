"""The queued notebook runner's hooks, with the kernel's messages fed by hand.

A real kernel's ``execute_reply`` (shell) and the next cell's ``busy`` and
``execute_input`` (iopub) leave it on different sockets, so the next cell's
start can reach the client before the previous cell's reply. These tests
feed that order on purpose, which a real server produces only now and then.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from nublado_sync._deadline import Deadline
from nublado_sync._messages import KernelMessage
from nublado_sync._notebooks._cells import DisplayRegistry
from nublado_sync._notebooks._plan import NotebookCell
from nublado_sync._notebooks._runner import _run_cells_queued
from nublado_sync._pipeline import PipelineCollector, QueuedCell


def _message(channel: str, msg_type: str, parent: str, **content: Any) -> KernelMessage:
    return KernelMessage(
        channel=channel,
        header={"msg_type": msg_type, "msg_id": f"{parent}-{msg_type}"},
        parent_header={"msg_id": parent},
        metadata={},
        content=content,
    )


def _started(parent: str, count: int) -> List[KernelMessage]:
    return [
        _message("iopub", "status", parent, execution_state="busy"),
        _message("iopub", "execute_input", parent, code="", execution_count=count),
    ]


def _finished(parent: str, count: int, text: str) -> List[KernelMessage]:
    return [
        _message("iopub", "stream", parent, name="stdout", text=text),
        _message("iopub", "status", parent, execution_state="idle"),
    ]


def _reply(parent: str, count: int) -> KernelMessage:
    return _message("shell", "execute_reply", parent, status="ok", execution_count=count)


class _ScriptedSession:
    """Stands in for the session: answers the queue with a fixed message order."""

    username = "someone"

    def __init__(self, script: Callable[[List[str]], List[KernelMessage]]) -> None:
        self._script = script

    def _execute_queued(
        self,
        cells: Sequence[QueuedCell],
        *,
        cell_timeout: Callable[[], Optional[datetime.timedelta]],
        on_output: Any = None,
        on_result: Any = None,
        on_start: Any = None,
    ) -> None:
        ids = [f"r{index}" for index in range(len(cells))]
        pipeline = PipelineCollector(
            ids,
            cells,
            cell_timeout=cell_timeout,
            on_output=on_output,
            on_result=on_result,
            on_start=on_start,
        )
        for msg in self._script(ids):
            pipeline.feed(msg)
        assert pipeline.done


def _code(cell_id: str, source: str) -> Dict[str, Any]:
    return {"cell_type": "code", "id": cell_id, "source": source, "metadata": {}, "outputs": []}


def _run(script: Callable[[List[str]], List[KernelMessage]]) -> Tuple[Dict[str, Any], List[Any]]:
    notebook = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {},
        "cells": [_code("one", "print(1)"), _code("two", "print(2)")],
    }
    seen: List[Any] = []

    def hook(kind: str) -> Callable[[NotebookCell], None]:
        def record(cell: NotebookCell) -> None:
            seen.append((kind, cell.label, [o.get("text") for o in cell.cell["outputs"]]))

        return record

    _run_cells_queued(
        _ScriptedSession(script),  # type: ignore[arg-type]
        notebook,
        name="n.ipynb",
        cell_limit=None,
        notebook_limit=None,
        deadline=Deadline(None),
        displays=DisplayRegistry(),
        allow_errors=False,
        hooks=(hook("start"), hook("complete"), hook("error")),
        on_output=None,
        node=dict,
    )
    return notebook, seen


EXPECTED_HOOKS = [
    ("start", "cell 1 of 2 (id 'one')", []),
    ("complete", "cell 1 of 2 (In [1], id 'one')", ["1\n"]),
    ("start", "cell 2 of 2 (id 'two')", []),
    ("complete", "cell 2 of 2 (In [2], id 'two')", ["2\n"]),
]


def test_hooks_in_order_when_replies_come_first() -> None:
    def script(ids: List[str]) -> List[KernelMessage]:
        first, second = ids
        return [
            *_started(first, 1),
            *_finished(first, 1, "1\n"),
            _reply(first, 1),
            *_started(second, 2),
            *_finished(second, 2, "2\n"),
            _reply(second, 2),
        ]

    notebook, seen = _run(script)
    assert seen == EXPECTED_HOOKS
    assert [c["execution_count"] for c in notebook["cells"]] == [1, 2]


def test_a_start_hook_sees_its_cell_unrun_when_the_next_cell_overtakes_a_reply() -> None:
    # The second cell goes busy, gets its count and even prints before the
    # first cell's reply is in: its start hook must still see it as a
    # cell-by-cell run shows it, with no count and no outputs yet.
    def script(ids: List[str]) -> List[KernelMessage]:
        first, second = ids
        return [
            *_started(first, 1),
            *_finished(first, 1, "1\n"),
            *_started(second, 2),
            _message("iopub", "stream", second, name="stdout", text="2\n"),
            _reply(first, 1),
            _message("iopub", "status", second, execution_state="idle"),
            _reply(second, 2),
        ]

    notebook, seen = _run(script)
    assert seen == EXPECTED_HOOKS
    assert [c["execution_count"] for c in notebook["cells"]] == [1, 2]
    assert [o["text"] for o in notebook["cells"][1]["outputs"]] == ["2\n"]
