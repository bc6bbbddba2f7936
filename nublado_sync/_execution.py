"""Gathering the replies to one ``execute_request`` into a result.

This is the protocol's bookkeeping with no I/O, so it can be tested on its
own: the session feeds it every decoded message and asks whether the
request is complete.
"""

from __future__ import annotations

import datetime
from typing import Any, Callable, Dict, List, Optional

from ._messages import KernelMessage
from ._models import ExecutionResult

__all__ = ["ExecutionCollector", "MessageCallback", "OutputCallback"]

OutputCallback = Callable[[Dict[str, Any]], None]
"""Called with each output, in nbformat 4 shape, as it arrives."""

MessageCallback = Callable[[Dict[str, Any]], None]
"""Called with each kernel message answering a request, as a dict."""

# jupyter_server's notices when its IOPub rate limit drops output; they
# arrive as stderr stream messages parented to the request.
_RATE_LIMIT_NOTICES = ("IOPub data rate exceeded.", "IOPub message rate exceeded.")

# Statuses the server or a freshly started kernel sends without a parent
# when the kernel process is replaced.
_RESTART_STATES = frozenset({"restarting", "dead", "starting", "autorestarting"})


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


class ExecutionCollector:
    """Accumulates the messages answering one request.

    Parameters
    ----------
    msg_id
        Id of the ``execute_request``.
    code
        The code sent, for the result.
    on_output
        Optional callback for each output as it arrives.
    on_message
        Optional callback for each message answering the request, as a
        dict in the Jupyter message shape (``header``, ``parent_header``,
        ``metadata``, ``content``, ``msg_type``, ``channel``).
    """

    def __init__(
        self,
        msg_id: str,
        code: str,
        on_output: Optional[OutputCallback] = None,
        on_message: Optional[MessageCallback] = None,
    ) -> None:
        self.msg_id = msg_id
        self._on_message = on_message
        self.code = code
        self.kernel_died = False
        self.rate_limited = False
        # The server's first notice, whole, for the warning.
        self.rate_limit_notice = ""
        # Set by the session: how often the WebSocket was reopened during
        # the request, and whether that may have cost output.
        self.reconnects = 0
        self.reconnect_lost = False
        self._code = code
        self._on_output = on_output
        self._reply: Optional[Dict[str, Any]] = None
        self._idle = False
        self._started = False
        self._outputs: List[Dict[str, Any]] = []
        # Stream text is kept as lists of chunks and joined once at the end,
        # so many small prints cost linear, not quadratic, time.
        self._stdout: List[str] = []
        self._stderr: List[str] = []
        self._error: Dict[str, Any] = {}
        self.started_at = _utcnow()

    @property
    def replied(self) -> bool:
        """The ``execute_reply`` arrived."""
        return self._reply is not None

    @property
    def done(self) -> bool:
        """Both ``execute_reply`` and the final ``idle`` status arrived."""
        return self._reply is not None and self._idle

    @property
    def idle(self) -> bool:
        """The request's final ``idle`` status arrived."""
        return self._idle

    def settle_without_reply(self) -> None:
        """Complete the request from its IOPub messages: its reply was lost.

        The status is what the reply would have said: ``error`` after an
        error output, ``aborted`` when the code never started (no
        ``execute_input``), ``ok`` otherwise.
        """
        if self._error:
            status = "error"
        elif self._started:
            status = "ok"
        else:
            status = "aborted"
        self._reply = {"status": status}

    def owns(self, parent: Optional[str]) -> bool:
        """Whether a message with this parent id answers the request."""
        return parent is not None and parent == self.msg_id

    def feed(self, msg: KernelMessage) -> None:
        """Take one message from the kernel; ignore what is not ours."""
        parent = msg.parent_id
        if parent is None:
            self._check_unparented(msg)
            return
        if parent != self.msg_id:
            return
        msg_type = msg.msg_type
        if self._on_message is not None:
            self._on_message(
                {
                    "channel": msg.channel,
                    "msg_type": msg_type,
                    "header": msg.header,
                    "parent_header": msg.parent_header,
                    "metadata": msg.metadata,
                    "content": msg.content,
                }
            )
        content = msg.content
        if msg.channel == "shell":
            if msg_type == "execute_reply":
                self._reply = content
            return
        if msg_type == "execute_input":
            self._started = True
        elif msg_type == "status":
            if content.get("execution_state") == "idle":
                self._idle = True
        elif msg_type == "stream":
            self._on_stream(content)
        elif msg_type in ("execute_result", "display_data"):
            self._emit(
                {
                    "output_type": msg_type,
                    "data": content.get("data", {}),
                    "metadata": content.get("metadata", {}),
                    **(
                        {"execution_count": content.get("execution_count")}
                        if msg_type == "execute_result"
                        else {}
                    ),
                }
            )
        elif msg_type == "error":
            self._error = content
            self._emit(
                {
                    "output_type": "error",
                    "ename": str(content.get("ename", "")),
                    "evalue": str(content.get("evalue", "")),
                    "traceback": [str(t) for t in content.get("traceback", [])],
                }
            )
        elif msg_type == "clear_output":
            # A notebook would erase the cell's displayed outputs; text
            # already written to stdout stays part of the result.
            self._outputs = [o for o in self._outputs if o["output_type"] == "stream"]
        # Anything else (execute_input, comm_*, update_display_data, types
        # newer than this client) carries no output we report.

    def _check_unparented(self, msg: KernelMessage) -> None:
        if (
            msg.channel == "iopub"
            and msg.msg_type == "status"
            and msg.content.get("execution_state") in _RESTART_STATES
        ):
            self.kernel_died = True

    def _on_stream(self, content: Dict[str, Any]) -> None:
        name = content.get("name")
        text = content.get("text", "")
        if not isinstance(text, str):
            text = str(text)
        if name == "stderr":
            if text.startswith(_RATE_LIMIT_NOTICES):
                self.rate_limited = True
                self.rate_limit_notice = self.rate_limit_notice or text
            self._stderr.append(text)
        else:
            name = "stdout"
            self._stdout.append(text)
        output = {"output_type": "stream", "name": name, "text": text}
        if self._on_output is not None:
            self._on_output(dict(output))
        # Consecutive chunks of one stream form one output, as in a notebook.
        last = self._outputs[-1] if self._outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            last["_chunks"].append(text)
        else:
            output["_chunks"] = [text]
            self._outputs.append(output)

    def _emit(self, output: Dict[str, Any]) -> None:
        self._outputs.append(output)
        if self._on_output is not None:
            self._on_output(output)

    def result(self) -> ExecutionResult:
        """Build the result from what arrived so far."""
        outputs = []
        for output in self._outputs:
            if output["output_type"] == "stream":
                outputs.append(
                    {
                        "output_type": "stream",
                        "name": output["name"],
                        "text": "".join(output["_chunks"]),
                    }
                )
            else:
                outputs.append(output)
        reply = self._reply or {}
        error = self._error or reply
        status = reply.get("status", "")
        count = reply.get("execution_count")
        traceback = error.get("traceback") or []
        return ExecutionResult(
            code=self._code,
            status=status if isinstance(status, str) else str(status),
            stdout="".join(self._stdout),
            stderr="".join(self._stderr),
            outputs=outputs,
            execution_count=count if isinstance(count, int) else None,
            ename=error.get("ename") if status == "error" or self._error else None,
            evalue=error.get("evalue") if status == "error" or self._error else None,
            traceback=[str(t) for t in traceback],
            output_lost=self.rate_limited or self.reconnect_lost,
            reconnects=self.reconnects,
            started_at=self.started_at,
            finished_at=_utcnow(),
        )
