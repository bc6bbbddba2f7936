"""Interrupts held back while a request that makes server state is in flight.

The signals are real: the test process sends them to itself, in the main
thread, where Python runs signal handlers.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType
from typing import Any, Iterator, List, Optional

import pytest

from nublado_sync._interrupts import deferred_interrupts


class _Log:
    def __init__(self) -> None:
        self.warnings: List[str] = []

    def bind(self, **values: Any) -> _Log:
        return self

    def debug(self, event: str, *args: Any, **kw: Any) -> None:
        pass

    info = error = debug

    def warning(self, event: str, *args: Any, **kw: Any) -> None:
        self.warnings.append(event)


@pytest.fixture(autouse=True)
def python_handlers() -> Iterator[None]:
    # Whatever the test runner had, these tests start from Python's own
    # SIGINT handler and no SIGTERM handler, and leave them as they were.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)


def test_sigint_is_delivered_when_the_block_ends() -> None:
    log = _Log()
    steps: List[str] = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts(log, "creating the thing"):
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("after the signal")
        steps.append("block done")
    assert steps == ["after the signal", "block done"]
    assert log.warnings == [
        "Interrupted: finishing creating the thing first, to clean it up; again to abandon it"
    ]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_second_sigint_is_delivered_at_once() -> None:
    steps: List[str] = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts(_Log(), "x"):
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("held")
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("not reached")
    assert steps == ["held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_held_interrupt_is_delivered_after_the_grace_period() -> None:
    # A request whose answer never comes: the interrupt goes through after
    # the grace period (0.2 s; margin 10 s) and wakes the blocked call.
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt), deferred_interrupts(_Log(), "x", grace=0.2):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(60)
    assert time.monotonic() - start < 0.2 + 10
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_exception_in_block_is_replaced_by_the_held_interrupt() -> None:
    with pytest.raises(KeyboardInterrupt) as info, deferred_interrupts(_Log(), "x"):
        os.kill(os.getpid(), signal.SIGINT)
        raise ValueError("the request failed")
    assert isinstance(info.value.__context__, ValueError)


def test_application_sigterm_handler_is_held_and_called_once() -> None:
    calls: List[int] = []

    class TerminatedError(Exception):
        pass

    def on_term(signum: int, frame: Optional[FrameType]) -> None:
        calls.append(signum)
        raise TerminatedError

    signal.signal(signal.SIGTERM, on_term)
    with pytest.raises(TerminatedError), deferred_interrupts(_Log(), "x"):
        os.kill(os.getpid(), signal.SIGTERM)
        assert calls == []
    assert calls == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is on_term


def test_default_sigterm_is_left_alone() -> None:
    with deferred_interrupts(_Log(), "x"):
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler


def test_no_signal_no_change() -> None:
    with deferred_interrupts(_Log(), "x"):
        pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_other_threads_run_the_block_unchanged() -> None:
    seen: List[Any] = []

    def work() -> None:
        with deferred_interrupts(_Log(), "x"):
            seen.append(signal.getsignal(signal.SIGINT))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [signal.default_int_handler]


def test_a_handler_that_returns_sees_every_signal() -> None:
    # An application handler that counts presses (and does not raise) gets
    # one call per signal, the held one included, and the block runs on.
    calls: List[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    steps: List[str] = []
    with deferred_interrupts(_Log(), "x"):
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("held")
        assert calls == []
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("both delivered")
        assert calls == [signal.SIGINT, signal.SIGINT]
    assert steps == ["held", "both delivered"]
    assert calls == [signal.SIGINT, signal.SIGINT]


def test_a_returning_handler_is_called_once_for_one_signal() -> None:
    calls: List[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: calls.append(signum))
    with deferred_interrupts(_Log(), "x"):
        os.kill(os.getpid(), signal.SIGINT)
        assert calls == []
    assert calls == [signal.SIGINT]
