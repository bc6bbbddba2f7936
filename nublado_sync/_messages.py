"""Jupyter messaging protocol: the message type and the requests we send.

See https://jupyter-client.readthedocs.io/en/latest/messaging.html. Only the
layer above the transport lives here; how messages become WebSocket frames
is `_wire`'s business.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ._random_pool import new_message_id

__all__ = [
    "PROTOCOL_VERSION",
    "KernelMessage",
    "make_request",
]

PROTOCOL_VERSION = "5.4"


@dataclass
class KernelMessage:
    """One message of the Jupyter messaging protocol, with its channel."""

    channel: str
    header: Dict[str, Any]
    parent_header: Dict[str, Any]
    metadata: Dict[str, Any]
    content: Dict[str, Any]
    buffers: List[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        """Message type, such as ``execute_reply``; empty when missing."""
        value = self.header.get("msg_type")
        return value if isinstance(value, str) else ""

    @property
    def msg_id(self) -> Optional[str]:
        """Id of this message."""
        value = self.header.get("msg_id")
        return value if isinstance(value, str) else None

    @property
    def parent_id(self) -> Optional[str]:
        """Id of the request this message answers; None when unparented."""
        value = self.parent_header.get("msg_id")
        return value if isinstance(value, str) and value else None


def make_request(
    channel: str,
    msg_type: str,
    content: Dict[str, Any],
    *,
    session: str,
    username: str,
) -> KernelMessage:
    """Build a request with a fresh message id."""
    now = datetime.datetime.now(tz=datetime.timezone.utc)
    header = {
        "msg_id": new_message_id(),
        "msg_type": msg_type,
        "session": session,
        "username": username,
        "version": PROTOCOL_VERSION,
        "date": now.isoformat(),
    }
    return KernelMessage(
        channel=channel,
        header=header,
        parent_header={},
        metadata={},
        content=content,
    )


def execute_request(
    code: str,
    *,
    session: str,
    username: str,
    store_history: bool = False,
    stop_on_error: bool = True,
) -> KernelMessage:
    """Build an ``execute_request`` that runs ``code`` without stdin.

    With ``stop_on_error``, an error makes the kernel abort the execute
    requests queued behind this one.
    """
    content = {
        "code": code,
        "silent": False,
        "store_history": store_history,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": stop_on_error,
    }
    return make_request("shell", "execute_request", content, session=session, username=username)
