"""A structlog logger for tests that keeps every rendered line."""

from __future__ import annotations

import logging
import threading
from typing import Any, List

import structlog

__all__ = ["LogCapture"]


class LogCapture:
    """A structlog logger at debug level whose rendered lines are kept."""

    def __init__(self) -> None:
        self.lines: List[str] = []
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        with self._lock:
            self.lines.append(message)

    debug = info = warning = warn = error = critical = exception = msg

    def logger(self) -> Any:
        return structlog.wrap_logger(
            self,
            wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
