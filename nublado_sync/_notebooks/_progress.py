"""Which cell of a notebook is running, and for how long: the command's display.

On a terminal a status line (``[cell 3/7] 12s  id 'load'``) is redrawn
every second while a cell runs, and cleared before the cell's own output is
written, so the two never mix. Without a terminal (cron, a pipe) each cell
gives plain log lines instead: when it starts and how long it took.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Dict, Optional, TextIO

from .._logging import Logger
from ._plan import NotebookCell, NotebookHooks

__all__ = ["CellProgress"]

# How often the terminal line is redrawn while a cell runs.
_REDRAW_SECONDS = 1.0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class CellProgress(NotebookHooks):
    """Notebook hooks that show the running cell (see the module docstring).

    Parameters
    ----------
    logger
        Where the log lines go without a terminal.
    stream
        The terminal (standard error); log lines are used when it is not a
        terminal.
    clock
        Monotonic clock, replaceable in tests.
    """

    def __init__(
        self, logger: Logger, stream: TextIO, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._logger = logger
        self._stream = stream
        self._terminal = stream.isatty()
        self._clock = clock
        self._lock = threading.Lock()
        self._cell: Optional[NotebookCell] = None
        self._started = 0.0
        self._shown = False
        self._stop = threading.Event()
        self._ticker: Optional[threading.Thread] = None

    def line(self) -> str:
        """Return the status line for the running cell (empty when none runs)."""
        cell = self._cell
        if cell is None:
            return ""
        elapsed = _duration(self._clock() - self._started)
        where = f"  id {cell.id!r}" if cell.id else ""
        return f"[cell {cell.number}/{cell.total}] running {elapsed}{where}"

    def on_cell_start(self, cell: NotebookCell) -> None:
        """Start showing a cell."""
        with self._lock:
            self._cell = cell
            self._started = self._clock()
        if not self._terminal:
            self._logger.info(
                "Running cell", cell=cell.number, of=cell.total, **_id(cell), notebook=cell.notebook
            )
            return
        self._draw()
        if self._ticker is None:
            self._ticker = threading.Thread(
                target=self._tick, name="nublado-sync-progress", daemon=True
            )
            self._ticker.start()

    def on_cell_complete(self, cell: NotebookCell) -> None:
        """Stop showing a cell; without a terminal, log how long it took."""
        with self._lock:
            seconds = self._clock() - self._started
            self._cell = None
            self._erase()
        if not self._terminal:
            status = cell.result.status if cell.result is not None else ""
            self._logger.info(
                "Cell finished",
                cell=cell.number,
                of=cell.total,
                seconds=round(seconds, 3),
                status=status or "unknown",
            )

    def wrap_output(
        self, write: Optional[Callable[[Dict[str, Any]], None]]
    ) -> Optional[Callable[[Dict[str, Any]], None]]:
        """Return an output callback that clears the status line around ``write``.

        Parameters
        ----------
        write
            The callback that writes a cell's output, or `None`.

        Returns
        -------
        callable or None
            The wrapped callback.
        """
        if write is None or not self._terminal:
            return write

        def wrapped(output: Dict[str, Any]) -> None:
            with self._lock:
                self._erase()
                write(output)
                self._draw_locked()

        return wrapped

    def close(self) -> None:
        """Stop redrawing and clear the line. Safe to call more than once."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * _REDRAW_SECONDS)
            self._ticker = None
        with self._lock:
            self._cell = None
            self._erase()

    def _tick(self) -> None:
        while not self._stop.wait(_REDRAW_SECONDS):
            self._draw()

    def _draw(self) -> None:
        with self._lock:
            self._draw_locked()

    def _draw_locked(self) -> None:
        text = self.line()
        if not text:
            return
        self._stream.write(f"\r\x1b[K{text}")
        self._stream.flush()
        self._shown = True

    def _erase(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def _id(cell: NotebookCell) -> Dict[str, str]:
    return {"id": cell.id} if cell.id else {}
