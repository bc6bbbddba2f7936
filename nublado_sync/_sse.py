"""Parsing a server-sent event stream (the hub's spawn progress).

See https://html.spec.whatwg.org/multipage/server-sent-events.html. The hub
sends only ``data:`` lines, but a parser must also accept ``event:``,
``id:``, ``retry:`` and comment lines, and any line ending.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterable, Iterator, List, Optional

from ._exceptions import NubladoProtocolError
from ._models import SpawnProgressMessage

__all__ = ["SSEParser", "iter_events", "parse_progress_event"]

_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEParser:
    """Incremental parser: feed bytes, get the data of complete events."""

    def __init__(self) -> None:
        self._buffer = b""
        self._data: List[str] = []

    def feed(self, chunk: bytes) -> List[str]:
        """Take the next bytes of the stream.

        Returns
        -------
        list of str
            The ``data`` of every event completed by this chunk.
        """
        self._buffer += chunk
        events: List[str] = []
        while True:
            match = _LINE_END.search(self._buffer)
            if match is None:
                return events
            # A CR at the very end may be the first half of a CRLF.
            if match.group() == b"\r" and match.end() == len(self._buffer):
                return events
            line = self._buffer[: match.start()].decode("utf-8", errors="replace")
            self._buffer = self._buffer[match.end() :]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> Optional[str]:
        if not line:
            # A blank line dispatches the event collected so far, if any.
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if field == "data":
            self._data.append(value)
        # event, id, retry and unknown fields carry nothing we use.
        return None


def iter_events(chunks: Iterable[bytes]) -> Iterator[str]:
    """Yield the data of each event in a stream of byte chunks."""
    parser = SSEParser()
    for chunk in chunks:
        yield from parser.feed(chunk)


def parse_progress_event(data: str) -> SpawnProgressMessage:
    """Turn one spawn progress event into a `SpawnProgressMessage`.

    Raises
    ------
    NubladoProtocolError
        The event is not a JSON object with the expected fields.
    """
    try:
        event: Any = json.loads(data)
    except ValueError as e:
        raise NubladoProtocolError(f"Spawn progress event is not JSON: {e}") from e
    if not isinstance(event, dict):
        raise NubladoProtocolError("Spawn progress event is not a JSON object")
    progress = event.get("progress", 0)
    if isinstance(progress, bool) or not isinstance(progress, (int, float)):
        raise NubladoProtocolError(f"Spawn progress {progress!r} is not a number")
    message = event.get("message", "")
    if not isinstance(message, str):
        message = str(message)
    return SpawnProgressMessage(
        progress=int(progress),
        message=message,
        ready=event.get("ready") is True,
        failed=event.get("failed") is True,
    )
