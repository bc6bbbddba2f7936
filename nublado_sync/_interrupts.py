"""Holding interrupts back while a request that makes server state is in flight.

A Ctrl-C that lands while ``POST api/sessions`` waits for its answer loses
the answer, and with it the id of the session the server is making: the
session and its kernel would stay behind. While such a request is in
flight, the first SIGINT (and SIGTERM or SIGHUP, when a Python handler is
installed for it, as the command-line tool does) is held and delivered as soon as
the answer is in, when the caller can clean up; a second one is delivered
at once, and so is the first after a grace period, should the answer not
come (the caller's cleanup then has to find the session by other means).
"""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ._logging import Logger

__all__ = ["deferred_interrupts"]

# How long a held interrupt waits for the answer. Creating a session takes
# well under a second on a healthy server (the kernel is started, not
# waited for); a user who does not want to wait interrupts again.
_GRACE = 5.0

_Handler = Callable[[int, Optional[FrameType]], Any]

# SIGHUP (a closed terminal) is held like the others; Windows has none.
_HELD = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])


@contextlib.contextmanager
def deferred_interrupts(logger: Logger, what: str, grace: float = _GRACE) -> Iterator[None]:
    """Hold SIGINT, SIGTERM and SIGHUP back for the duration of the block.

    Only Python-level handlers are replaced (Python's own KeyboardInterrupt
    handler, or the application's), and only in the main thread, the one
    that receives signals; elsewhere the block runs as it is.

    Parameters
    ----------
    logger
        Where to say that an interrupt is being held.
    what
        What the block does, for that message.
    grace
        Seconds after which a held signal is delivered anyway.

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
    finished = expired = False
    # Reentrant: the handler runs in the main thread, which may hold it.
    lock = threading.RLock()
    timers: List[threading.Timer] = []
    main = threading.main_thread().ident

    def expire(signum: int) -> None:
        # The signal again, aimed at the main thread, so that a blocking
        # read there is interrupted and the handler below runs.
        nonlocal expired
        with lock:
            wanted = not (finished or delivered)
            if wanted and main is not None and hasattr(signal, "pthread_kill"):
                expired = True
                signal.pthread_kill(main, signum)

    def restore() -> None:
        for signum, original in originals.items():
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, original)

    def deliver() -> None:
        # Every signal that came, in order, each to the handler it was
        # meant for (a handler that counts presses sees them all).
        nonlocal delivered
        with lock:
            delivered = True
        restore()
        for signum, frame in pending:
            originals[signum](signum, frame)

    def hold(signum: int, frame: Optional[FrameType]) -> None:
        if pending and not expired:
            # A second interrupt: the user does not want to wait.
            pending.append((signum, frame))
        if pending:
            deliver()  # or the grace period is over (the signal is ours)
            return
        pending.append((signum, frame))
        logger.warning(f"Interrupted: finishing {what} first, to clean it up; again to abandon it")
        timer = threading.Timer(grace, expire, args=(signum,))
        timer.daemon = True
        timers.append(timer)
        timer.start()

    for signum in _HELD:
        current = signal.getsignal(signum)
        if callable(current):
            with contextlib.suppress(ValueError, OSError):
                signal.signal(signum, hold)
                originals[signum] = current
    try:
        yield
    finally:
        with lock:
            finished = True
        for timer in timers:
            timer.cancel()
            timer.join()
        restore()
        if pending and not delivered:
            deliver()
