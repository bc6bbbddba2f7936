"""A cell's outputs and timings, built from the kernel's messages as nbclient builds them.

The session's result holds outputs for a caller of `execute`; a notebook
needs what JupyterLab and nbclient keep: ``clear_output`` (at once, or with
``wait`` before the next output) empties the cell, ``update_display_data``
replaces an earlier display with the same ``display_id`` (in any cell of
the notebook), the execution count comes from ``execute_input``, and
``metadata.execution`` holds the timestamps of the kernel's messages.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Mapping, Optional

__all__ = ["CellRecorder", "DisplayRegistry"]

_OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


class DisplayRegistry:
    """Outputs of a whole notebook run that carry a ``display_id``."""

    def __init__(self) -> None:
        self._outputs: Dict[str, List[Dict[str, Any]]] = {}

    def add(self, display_id: str, output: Dict[str, Any]) -> None:
        """Remember an output shown under ``display_id``."""
        self._outputs.setdefault(display_id, []).append(output)

    def forget(self, outputs: List[Dict[str, Any]]) -> None:
        """Forget outputs that were cleared from their cell."""
        gone = {id(o) for o in outputs}
        for display_id, shown in self._outputs.items():
            self._outputs[display_id] = [o for o in shown if id(o) not in gone]

    def update(self, display_id: str, data: Any, metadata: Any) -> None:
        """Give every output shown under ``display_id`` new data."""
        for output in self._outputs.get(display_id, []):
            output["data"] = data
            output["metadata"] = metadata


def _timestamp(header: Mapping[str, Any]) -> Optional[str]:
    # nbclient's format: UTC with microseconds and a Z.
    value = header.get("date")
    if not isinstance(value, str) or not value:
        return None
    text = value[:-1] + "+00:00" if value.endswith("Z") else value
    try:
        moment = datetime.datetime.fromisoformat(_six_digit_fraction(text))
    except ValueError:
        return value
    if moment.tzinfo is not None:
        moment = moment.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _six_digit_fraction(text: str) -> str:
    # Python 3.9's fromisoformat takes 3 or 6 digits of fraction only.
    if "." not in text:
        return text
    head, rest = text.split(".", 1)
    digits = ""
    while rest and rest[0].isdigit():
        digits, rest = digits + rest[0], rest[1:]
    return f"{head}.{(digits + '000000')[:6]}{rest}"


class CellRecorder:
    """Fills one code cell from the messages answering its execution.

    Parameters
    ----------
    cell
        The notebook cell; its ``outputs``, ``execution_count`` and
        ``metadata.execution`` are replaced.
    displays
        The notebook's displays, shared by all its cells.
    node
        Makes each dict written into the notebook (papermill's engine
        needs ``NotebookNode`` objects).
    """

    def __init__(
        self,
        cell: Dict[str, Any],
        displays: DisplayRegistry,
        node: Callable[[Dict[str, Any]], Dict[str, Any]] = dict,
    ) -> None:
        self.cell = cell
        self._node = node
        self._displays = displays
        self._clear_before_next = False
        self.outputs: List[Dict[str, Any]] = []
        cell["outputs"] = self.outputs
        cell["execution_count"] = None
        metadata = cell.get("metadata")
        if not isinstance(metadata, dict):
            metadata = cell["metadata"] = {}
        self.timings: Dict[str, Any] = node({})
        metadata["execution"] = self.timings

    def on_message(self, msg: Dict[str, Any]) -> None:
        """Take one message answering the cell's ``execute_request``."""
        msg_type = msg["msg_type"]
        content = msg.get("content") or {}
        stamp = _timestamp(msg.get("header") or {})
        if msg["channel"] == "shell":
            if msg_type == "execute_reply" and stamp:
                self.timings["shell.execute_reply"] = stamp
            return
        if msg_type == "status":
            state = content.get("execution_state")
            if state in ("busy", "idle") and stamp:
                self.timings[f"iopub.status.{state}"] = stamp
        elif msg_type == "execute_input":
            if stamp:
                self.timings["iopub.execute_input"] = stamp
            count = content.get("execution_count")
            if isinstance(count, int):
                self.cell["execution_count"] = count
        elif msg_type == "clear_output":
            if content.get("wait"):
                self._clear_before_next = True
            else:
                self._clear()
        elif msg_type == "update_display_data":
            display_id = _display_id(content)
            if display_id:
                self._displays.update(
                    display_id, content.get("data", {}), content.get("metadata", {})
                )
        elif msg_type in _OUTPUT_TYPES:
            self._add(msg_type, content)

    def _clear(self) -> None:
        self._displays.forget(self.outputs)
        del self.outputs[:]

    def _add(self, msg_type: str, content: Mapping[str, Any]) -> None:
        if self._clear_before_next:
            self._clear()
            self._clear_before_next = False
        output: Dict[str, Any] = {"output_type": msg_type}
        if msg_type == "stream":
            output["name"] = content.get("name", "stdout")
            output["text"] = str(content.get("text", ""))
            last = self.outputs[-1] if self.outputs else None
            # Consecutive chunks of one stream form one output, as
            # JupyterLab saves them.
            if last and last["output_type"] == "stream" and last["name"] == output["name"]:
                last["text"] += output["text"]
                return
        elif msg_type == "error":
            output["ename"] = str(content.get("ename", ""))
            output["evalue"] = str(content.get("evalue", ""))
            output["traceback"] = [str(t) for t in content.get("traceback", [])]
        else:
            if msg_type == "execute_result":
                output["execution_count"] = content.get("execution_count")
            output["data"] = content.get("data", {})
            output["metadata"] = content.get("metadata", {})
            display_id = _display_id(content)
            if display_id:
                # A new display under a known id also updates the old ones.
                self._displays.update(display_id, output["data"], output["metadata"])
                shown = self._node(output)
                self._displays.add(display_id, shown)
                self.outputs.append(shown)
                return
        self.outputs.append(self._node(output))


def _display_id(content: Mapping[str, Any]) -> Optional[str]:
    transient = content.get("transient")
    if isinstance(transient, Mapping):
        display_id = transient.get("display_id")
        if isinstance(display_id, str) and display_id:
            return display_id
    return None
