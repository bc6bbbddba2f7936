"""Holding interrupts back while a request that makes server state is in flight.

A Ctrl-C that lands while ``POST api/sessions`` waits for its answer loses
the answer, and with it the id of the session the server is making: the
session and its kernel would stay behind. While such a request is in
flight, the first SIGINT (and SIGTERM, when a Python handler is installed
for it, as the command-line tool does) is held and delivered as soon as
the answer is in, when the caller can clean up; a second one is delivered
at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ._logging import Logger

__all__ = ["deferred_interrupts"]

_Handler = Callable[[int, Optional[FrameType]], Any]


@contextlib.contextmanager
def deferred_interrupts(logger: Logger, what: str) -> Iterator[None]:
    """Hold SIGINT and SIGTERM back for the duration of the block.

    Only Python-level handlers are replaced (Python's own KeyboardInterrupt
    handler, or the application's), and only in the main thread, the one
    that receives signals; elsewhere the block runs as it is.

    Parameters
    ----------
    logger
        Where to say that an interrupt is being held.
    what
        What the block does, for that message.

    Raises
    ------
    KeyboardInterrupt
        Or whatever the original handler raises, when a signal came during
        the block: on the way out of it, or at once for a second signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    originals: Dict[int, _Handler] = {}
    pending: List[Tuple[int, Optional[FrameType]]] = []
    delivered = False

    def restore() -> None:
        for signum, original in originals.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, original)

    def deliver(signum: int, frame: Optional[FrameType]) -> None:
        nonlocal delivered
        delivered = True
        restore()
        originals[signum](signum, frame)

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        if pending:
            # A second interrupt: the user does not want to wait.
            deliver(signum, frame)
            return
        pending.append((signum, frame))
        logger.warning(f"Interrupted: finishing {what} first, to clean it up; again to abandon it")

    for signum in (signal.SIGINT, signal.SIGTERM):
        current = signal.getsignal(signum)
        if callable(current):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, hold)
                originals[signum] = current
    try:
        yield
    finally:
        restore()
        if pending and not delivered:
            deliver(*pending[0])
