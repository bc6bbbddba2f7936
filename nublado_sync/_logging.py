"""The logger type accepted everywhere, and the default one."""

from __future__ import annotations

import logging
from typing import Any, Protocol

__all__ = ["Logger", "debug_enabled", "default_logger"]


class Logger(Protocol):
    """What this package needs of a logger; any structlog logger has it."""

    def bind(self, **new_values: Any) -> Any: ...

    def debug(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def info(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def warning(self, event: str, *args: Any, **kw: Any) -> Any: ...

    def error(self, event: str, *args: Any, **kw: Any) -> Any: ...


def default_logger() -> Logger:
    """Return the logger used when the caller injects none.

    It goes through the standard library logger ``nublado_sync``, so a
    script that configures nothing sees only warnings and errors (Python's
    last-resort handler), and debug calls stop at a cheap level check. An
    application that configures structlog injects its own logger instead.
    """
    import structlog  # on first use: an injected logger never needs it

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
