"""The logger type accepted everywhere, and the default one."""

from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Protocol

__all__ = ["DeferredLogger", "Logger", "debug_enabled", "default_logger"]


class Logger(Protocol):
    """What this package needs of a logger; any structlog logger has it."""

    def bind(self, **new_values: Any) -> Any: ...

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


class DeferredLogger:
    """A logger that builds its structlog logger for the first message it lets through.

    Importing structlog costs tens of milliseconds (``structlog.stdlib``
    imports asyncio), which a cron job that logs nothing should not pay
    for at start-up, when every millisecond delays its first output. Level
    checks need no structlog, so messages below the level are dropped
    without it.

    Parameters
    ----------
    build
        Makes the real logger; called once, on the first message that
        passes ``enabled``, and shared by every logger bound from this one.
    enabled
        Tells whether a message at a standard-library level passes.
    """

    __slots__ = ("_build", "_built", "_context", "_enabled", "_lock")

    def __init__(
        self,
        build: Callable[[], Logger],
        enabled: Callable[[int], bool],
        *,
        _context: Optional[Dict[str, Any]] = None,
        _built: Optional[List[Logger]] = None,
        _lock: Optional[threading.Lock] = None,
    ) -> None:
        self._build = build
        self._enabled = enabled
        self._context = _context or {}
        self._built = _built if _built is not None else []
        self._lock = _lock or threading.Lock()

    def bind(self, **new_values: Any) -> DeferredLogger:
        """Return a logger that adds these values to every message."""
        return DeferredLogger(
            self._build,
            self._enabled,
            _context={**self._context, **new_values},
            _built=self._built,
            _lock=self._lock,
        )

    def is_enabled_for(self, level: int) -> bool:
        """Tell whether a message at this standard-library level would be logged."""
        return self._enabled(level)

    def debug(self, event: str, *args: Any, **kw: Any) -> Any:
        """Log a debug message."""
        return self._log(logging.DEBUG, "debug", event, args, kw)

    def info(self, event: str, *args: Any, **kw: Any) -> Any:
        """Log an informational message."""
        return self._log(logging.INFO, "info", event, args, kw)

    def warning(self, event: str, *args: Any, **kw: Any) -> Any:
        """Log a warning."""
        return self._log(logging.WARNING, "warning", event, args, kw)

    def error(self, event: str, *args: Any, **kw: Any) -> Any:
        """Log an error."""
        return self._log(logging.ERROR, "error", event, args, kw)

    def _log(self, level: int, method: str, event: str, args: Any, kw: Dict[str, Any]) -> Any:
        if not self._enabled(level):
            return None
        with self._lock:
            if not self._built:
                self._built.append(self._build())
            logger = self._built[0]
        if self._context:
            logger = logger.bind(**self._context)
        return getattr(logger, method)(event, *args, **kw)


def default_logger() -> Logger:
    """Return the logger used when the caller injects none.

    It goes through the standard library logger ``nublado_sync``, so a
    script that configures nothing sees only warnings and errors (Python's
    last-resort handler), and debug calls stop at a cheap level check. An
    application that configures structlog injects its own logger instead.
    """
    return DeferredLogger(_stdlib_logger, logging.getLogger("nublado_sync").isEnabledFor)


def _stdlib_logger() -> Logger:
    import structlog

    logger: Logger = structlog.wrap_logger(
        logging.getLogger("nublado_sync"),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"]),
        ],
    )
    return logger


def debug_enabled(logger: Logger) -> bool:
    """Tell whether a logger would emit debug messages.

    Hot paths ask once per call and skip per-message debug logging (and
    the work of building its arguments) when it would be dropped anyway.
    Loggers that cannot tell are assumed to log.
    """
    check = getattr(logger, "is_enabled_for", None) or getattr(logger, "isEnabledFor", None)
    if check is None:
        return True
    return bool(check(logging.DEBUG))
