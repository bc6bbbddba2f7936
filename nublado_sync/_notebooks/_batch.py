"""Running many notebooks, each in a fresh kernel session, a few at a time.

This module sits above the notebook runner and the session: it opens one
session per notebook through a factory the caller gives (so every notebook
gets a fresh kernel in the same lab), runs the notebook in it, and gathers
the outcomes. A thread pool bounds how many sessions are open at once.
"""

from __future__ import annotations

import contextlib
import datetime
import enum
import functools
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ContextManager,
    Dict,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from .._exceptions import (
    KernelGoneError,
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoUsageError,
)
from .._logging import Logger, default_logger
from .._models import CodeContext
from .._redact import strip_ansi

if TYPE_CHECKING:
    from .._session import JupyterLabSession

__all__ = [
    "BatchResult",
    "NotebookOutcome",
    "NotebookRun",
    "SessionOpener",
    "find_notebooks",
    "run_notebooks",
]

SessionOpener = Callable[[str], ContextManager["JupyterLabSession"]]
"""Opens a fresh kernel session for the notebook of that name.

`NubladoClient.lab_session` fits as it is; for a server without a hub,
``lambda name: open_lab_session(url, token, notebook_name=name)``.
"""

NotebookContent = Union[str, bytes, Mapping[str, Any]]
NotebookSpec = Union[str, "os.PathLike[str]", Tuple[str, NotebookContent]]

# The default number of notebooks run at once. Every session is a kernel in
# the same lab, sharing its CPUs and memory: noteburst's experience is to run
# no more notebooks at once than the lab has CPUs, and a lab that runs out of
# memory loses all its kernels at once. Two keeps a small lab busy without
# overcommitting it; raise it for a large one.
DEFAULT_JOBS = 2

# How often the waiting caller wakes to check for a finished pool when no
# event arrives (events normally wake it at once).
_POLL = 0.5

# How long, on Ctrl-C, each notebook in flight may read the kernel's answers
# to the interrupt (its cell's KeyboardInterrupt, the queued cells aborted
# behind it) before its connection is cut. The notebook then ends as a
# failed cell would, with what ran so far (saved with --save-notebook), and
# no queued cell is left to the kernel's shutdown, whose own interrupt could
# start one. A second Ctrl-C cuts at once.
_ABORT_GRACE = datetime.timedelta(seconds=3)


class NotebookOutcome(str, enum.Enum):
    """How the run of one notebook ended."""

    PASSED = "passed"
    """Every code cell ran without an error."""
    FAILED = "failed"
    """A cell raised an exception, or the kernel died."""
    TIMED_OUT = "timed out"
    """A cell ran past its deadline; the kernel was interrupted."""
    ERROR = "error"
    """The session could not be opened, or the connection failed."""
    INTERRUPTED = "interrupted"
    """The batch was stopped (Ctrl-C, SIGTERM) while the notebook ran."""
    NOT_RUN = "not run"
    """The batch was stopped before the notebook started."""


@dataclass(frozen=True)
class NotebookRun:
    """The run of one notebook of a batch: while it runs and once it ended.

    Parameters
    ----------
    index
        Position of the notebook in the batch (input order).
    name
        The notebook's name: its path as given, or as found in a directory.
    path
        The file it was read from; `None` for content given directly.
    outcome
        How it ended; `None` while it runs.
    started_at
        When its session was requested (UTC); `None` if it never started.
    duration
        Time from that request until the session was deleted; `None` while
        it runs or if it never started.
    notebook
        The executed notebook as ``.ipynb`` text, as far as it ran (up to
        and including a failed cell); `None` when no cell ran.
    error
        The exception that ended the run, for every outcome but ``passed``
        and ``not run``.
    saved_to
        Where the executed notebook was written, if it was.
    """

    index: int
    name: str
    path: Optional[Path] = None
    outcome: Optional[NotebookOutcome] = None
    started_at: Optional[datetime.datetime] = None
    duration: Optional[datetime.timedelta] = None
    notebook: Optional[str] = None
    error: Optional[BaseException] = None
    saved_to: Optional[Path] = None

    @property
    def failed_cell(self) -> Optional[CodeContext]:
        """The cell that failed or timed out, when a cell did."""
        if isinstance(self.error, (NubladoExecutionError, NubladoExecutionTimeoutError)):
            context = self.error.context
            if context.cell is not None or context.cell_number is not None:
                return context
        return None

    @property
    def message(self) -> str:
        """One line saying why the run did not pass; empty when it passed."""
        if self.outcome is None or self.outcome is NotebookOutcome.PASSED:
            return ""
        if self.outcome is NotebookOutcome.NOT_RUN:
            return "not run: the batch was stopped before it started"
        if self.outcome is NotebookOutcome.INTERRUPTED:
            return "interrupted: the batch was stopped while it ran"
        return describe_failure(self.error)


def describe_failure(error: Optional[BaseException]) -> str:
    """Say in one line which cell failed and with what error.

    Parameters
    ----------
    error
        The exception that ended a notebook run.

    Returns
    -------
    str
        For example ``cell 3 (id compute): ZeroDivisionError: division by
        zero``, or the exception's first line for failures outside a cell.
    """
    if error is None:
        return ""
    where = ""
    context = getattr(error, "context", None)
    if isinstance(context, CodeContext) and (context.cell_number or context.cell):
        where = f"cell {context.cell_number or '?'}"
        if context.cell and context.cell != context.cell_number:
            where += f" (id {context.cell})"
        where += ": "
    if isinstance(error, NubladoExecutionTimeoutError):
        return f"{where}timed out after {error.timeout.total_seconds():g}s"
    result = getattr(error, "result", None)
    ename = getattr(result, "ename", None)
    if isinstance(error, NubladoExecutionError) and ename:
        evalue = strip_ansi(str(getattr(result, "evalue", "") or ""))
        return f"{where}{ename}: {evalue}" if evalue else f"{where}{ename}"
    if isinstance(error, NubladoExecutionError) and error.status:
        return f"{where}{error.status}: {_first_line(error.error or str(error))}"
    return f"{where}{type(error).__name__}: {_first_line(str(error))}"


def _first_line(text: str) -> str:
    lines = strip_ansi(text).strip().splitlines()
    return lines[0] if lines else ""


@dataclass(frozen=True)
class BatchResult:
    """The runs of a batch of notebooks, in input order.

    Parameters
    ----------
    runs
        One `NotebookRun` per notebook, each with its outcome.
    started_at
        When the batch started (UTC).
    duration
        Wall time of the whole batch.
    """

    runs: Sequence[NotebookRun]
    started_at: datetime.datetime = field(
        default_factory=lambda: datetime.datetime.now(tz=datetime.timezone.utc)
    )
    duration: datetime.timedelta = datetime.timedelta(0)

    @property
    def ok(self) -> bool:
        """Whether every notebook passed."""
        return all(run.outcome is NotebookOutcome.PASSED for run in self.runs)

    def counts(self) -> Dict[str, int]:
        """Count the notebooks of each outcome (every outcome, zeros included)."""
        counts = {outcome.value: 0 for outcome in NotebookOutcome}
        for run in self.runs:
            if run.outcome is not None:
                counts[run.outcome.value] += 1
        return counts


@dataclass(frozen=True)
class _Job:
    index: int
    name: str
    path: Optional[Path]
    content: NotebookContent
    save_as: Path


def find_notebooks(paths: Iterable[Union[str, os.PathLike[str]]]) -> List[Tuple[str, Path]]:
    """Expand files and directories into the notebooks to run.

    A directory stands for every ``.ipynb`` file below it, in sorted order,
    except in hidden directories and ``.ipynb_checkpoints``.

    Parameters
    ----------
    paths
        Notebook files and directories.

    Returns
    -------
    list of (str, pathlib.Path)
        Each notebook's file and its path relative to the directory it was
        found in (just its name for a file given directly): where it goes
        in a directory of saved notebooks.

    Raises
    ------
    NubladoUsageError
        A path does not exist, a file is not a ``.ipynb`` notebook, a
        directory holds none, or a notebook is named twice.
    """
    found: List[Tuple[str, Path]] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            below = sorted(
                p
                for p in path.rglob("*.ipynb")
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not below:
                raise NubladoUsageError(f"No .ipynb notebook in the directory {given}")
            found.extend((str(p.relative_to(path)), p) for p in below)
        elif path.is_file():
            if path.suffix != ".ipynb":
                raise NubladoUsageError(f"Not a .ipynb notebook: {given}")
            found.append((path.name, path))
        else:
            raise NubladoUsageError(f"No such notebook or directory: {given}")
    seen: Set[Path] = set()
    for _, path in found:
        resolved = path.resolve()
        if resolved in seen:
            raise NubladoUsageError(f"The notebook {path} is named twice")
        seen.add(resolved)
    return [(relative, path) for relative, path in found]


def load_jobs(notebooks: Iterable[NotebookSpec]) -> List[_Job]:
    """Read and check every notebook of a batch (not public: see `run_notebooks`)."""
    # Imported here: the notebook runner loads with the session, later.
    from ._format import parse_notebook

    jobs: List[_Job] = []
    files: List[Union[str, os.PathLike[str]]] = []
    for spec in notebooks:
        if isinstance(spec, tuple):
            if len(spec) != 2 or not isinstance(spec[0], str) or not spec[0]:
                raise NubladoUsageError(
                    "A notebook given as content must be a (name, content) pair"
                )
            name, content = spec
            parse_notebook(content)  # refused now, not an hour into the batch
            jobs.append(_Job(len(jobs), name, None, content, Path(Path(name).name)))
        elif isinstance(spec, (str, os.PathLike)):
            files.append(spec)
        else:
            raise NubladoUsageError(
                f"A notebook must be a path or a (name, content) pair, not {type(spec).__name__}"
            )
    for save_as, path in find_notebooks(files):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise NubladoUsageError(f"Cannot read {path}: {e}") from None
        try:
            parse_notebook(text)
        except NubladoUsageError as e:
            raise NubladoUsageError(f"{path}: {e.message}") from None
        jobs.append(_Job(len(jobs), str(path), path, text, Path(save_as)))
    names: Set[str] = set()
    targets: Dict[Path, str] = {}
    for job in jobs:
        if job.name in names:
            raise NubladoUsageError(f"Two notebooks are named {job.name}")
        names.add(job.name)
        other = targets.setdefault(job.save_as, job.name)
        if other != job.name:
            raise NubladoUsageError(
                f"{other} and {job.name} would both be saved as {job.save_as}; run them apart"
            )
    return jobs


def _check_save_dir(save_dir: Path) -> None:
    if save_dir.exists() and not save_dir.is_dir():
        raise NubladoUsageError(f"Cannot save notebooks into {save_dir}: it is not a directory")
    existing = save_dir
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK):
        raise NubladoUsageError(f"Cannot save notebooks into {save_dir}: {existing} is read-only")


class _Batch:
    """One batch's state, shared by the caller's thread and the workers."""

    def __init__(
        self,
        open_session: SessionOpener,
        *,
        cell_timeout: Optional[datetime.timedelta],
        save_dir: Optional[Path],
        logger: Logger,
        run_notebook: Callable[..., str],
    ) -> None:
        self._open_session = open_session
        self._cell_timeout = cell_timeout
        self._save_dir = save_dir
        self._logger = logger
        self._run_notebook = run_notebook
        self.stop = threading.Event()
        self.events: queue.Queue[NotebookRun] = queue.Queue()
        self._lock = threading.Lock()
        self._live: Set[JupyterLabSession] = set()

    def abort_all(self) -> None:
        """Stop every notebook in flight (called in the caller's thread).

        Each session is aborted with a grace (see `_ABORT_GRACE`), all at
        once, one short-lived thread each; returns once every one is cut.
        A second call (a second Ctrl-C) cuts them at once.
        """
        self.stop.set()
        with self._lock:
            live = list(self._live)
        stoppers = [
            threading.Thread(target=session.abort, args=(_ABORT_GRACE,), name="nublado-batch-abort")
            for session in live
        ]
        for stopper in stoppers:
            stopper.start()
        for stopper in stoppers:
            stopper.join()

    def _track(self, session: JupyterLabSession) -> bool:
        with self._lock:
            if self.stop.is_set():
                return False
            self._live.add(session)
            return True

    def _untrack(self, session: JupyterLabSession) -> None:
        with self._lock:
            self._live.discard(session)

    def run(self, job: _Job) -> NotebookRun:
        """Run one notebook in a fresh session (in a worker thread)."""
        if self.stop.is_set():
            return self._finish(NotebookRun(job.index, job.name, job.path, NotebookOutcome.NOT_RUN))
        started_at = datetime.datetime.now(tz=datetime.timezone.utc)
        began = time.monotonic()
        self.events.put(NotebookRun(job.index, job.name, job.path, started_at=started_at))
        outcome = NotebookOutcome.PASSED
        executed: Optional[str] = None
        error: Optional[BaseException] = None
        try:
            with contextlib.ExitStack() as stack:
                session = self._enter_session(job, stack)
                if not self._track(session):
                    raise _StoppedError
                try:
                    executed = self._run_notebook(
                        session, job.content, name=job.name, cell_timeout=self._cell_timeout
                    )
                finally:
                    self._untrack(session)
        except _StoppedError:
            outcome = NotebookOutcome.INTERRUPTED
        except (NubladoExecutionError, NubladoExecutionTimeoutError) as e:
            executed, error = e.notebook, e
            outcome = (
                NotebookOutcome.TIMED_OUT
                if isinstance(e, NubladoExecutionTimeoutError)
                else NotebookOutcome.FAILED
            )
        except NubladoError as e:
            error = e
            outcome = NotebookOutcome.ERROR
        except Exception as e:
            # A bug, ours or in the opener: it ends this notebook, not the
            # batch, and is reported with it.
            self._logger.error("Notebook run failed unexpectedly", notebook=job.name, exc_info=True)
            error = e
            outcome = NotebookOutcome.ERROR
        if self.stop.is_set() and outcome is not NotebookOutcome.PASSED:
            # What a stopped run raised is a consequence of the stop.
            outcome = NotebookOutcome.INTERRUPTED
        saved_to: Optional[Path] = None
        if executed is not None and self._save_dir is not None:
            try:
                saved_to = self._save(job, executed)
            except OSError as e:
                if outcome is NotebookOutcome.PASSED:
                    outcome = NotebookOutcome.ERROR
                    error = NubladoUsageError(
                        f"Cannot save the executed notebook: {e.strerror or e}"
                    )
                self._logger.warning("Could not save the notebook", notebook=job.name, error=str(e))
        duration = datetime.timedelta(seconds=time.monotonic() - began)
        return self._finish(
            NotebookRun(
                job.index,
                job.name,
                job.path,
                outcome,
                started_at,
                duration,
                executed,
                error,
                saved_to,
            )
        )

    def _enter_session(self, job: _Job, stack: contextlib.ExitStack) -> JupyterLabSession:
        # A kernel that died while starting (a crowded lab) ran nothing of
        # the notebook: a new session is opened in its place, once.
        attempt = 1
        while True:
            try:
                session: JupyterLabSession = stack.enter_context(self._open_session(job.name))
            except KernelGoneError as e:
                if attempt >= _OPEN_ATTEMPTS or self.stop.is_set():
                    raise
                attempt += 1
                self._logger.warning(
                    "Kernel died while starting, opening a new session",
                    notebook=job.name,
                    error=e.message,
                )
                continue
            return session

    def _save(self, job: _Job, executed: str) -> Path:
        assert self._save_dir is not None
        target = self._save_dir / job.save_as
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(executed, encoding="utf-8")
        return target

    def _finish(self, run: NotebookRun) -> NotebookRun:
        self.events.put(run)
        return run


# Sessions opened for one notebook before a kernel that dies while starting
# is reported as the notebook's error.
_OPEN_ATTEMPTS = 2


class _StoppedError(Exception):
    """The batch was stopped after this notebook's session opened."""


def run_notebooks(
    notebooks: Iterable[NotebookSpec],
    open_session: SessionOpener,
    *,
    jobs: int = DEFAULT_JOBS,
    cell_timeout: Optional[datetime.timedelta] = None,
    save_dir: Optional[Union[str, os.PathLike[str]]] = None,
    on_event: Optional[Callable[[NotebookRun], None]] = None,
    logger: Optional[Logger] = None,
    queue_cells: bool = True,
) -> BatchResult:
    """Run many notebooks, each in a fresh kernel, at most ``jobs`` at a time.

    Every notebook gets its own session from ``open_session`` (a new kernel,
    deleted when the notebook ends) and runs there as `execute_notebook`
    runs it, stopping at its first failing cell. A failure ends that notebook only; the others
    go on. All notebooks are read and checked before the first one starts.

    Runs in worker threads (a thread pool of ``jobs`` threads); the calling
    thread waits and calls ``on_event``. A ``KeyboardInterrupt`` in the
    calling thread (Ctrl-C, or SIGTERM turned into one) stops the batch:
    the notebooks in flight are interrupted, every session is deleted,
    ``on_event`` still sees every notebook end (``interrupted`` or ``not
    run``), and then the ``KeyboardInterrupt`` propagates.

    Parameters
    ----------
    notebooks
        Paths of notebooks, directories (every ``.ipynb`` below them, see
        `find_notebooks`), or ``(name, content)`` pairs with the notebook as
        ``.ipynb`` text or parsed JSON.
    open_session
        Called with the notebook's name in a worker thread; returns a
        context manager yielding a fresh `JupyterLabSession`, such as
        `NubladoClient.lab_session` or a call of `open_lab_session`. It is
        called from several threads at once.
    jobs
        Most notebooks run at once (2 by default: they share one lab's CPUs
        and memory).
    cell_timeout
        Deadline of each cell; `None` for none.
    save_dir
        Directory to write each executed notebook into, as far as it ran,
        under its name relative to the directory it was found in (just its
        file name when given directly). Created if missing.
    on_event
        Called in the calling thread when a notebook starts (a `NotebookRun`
        whose ``outcome`` is `None`) and when it ends.
    logger
        Logger for problems beside the notebooks' own failures.
    queue_cells
        Send each notebook's cells at once (the default) or one by one; see
        `execute_notebook`.

    Returns
    -------
    BatchResult
        Every notebook's run, in input order.

    Raises
    ------
    NubladoUsageError
        Bad arguments, or a notebook that cannot be read or is not an
        nbformat 4 notebook; nothing was started.
    KeyboardInterrupt
        The batch was stopped; every session was deleted first.
    """
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise NubladoUsageError(f"jobs must be a positive integer, not {jobs!r}")
    if cell_timeout is not None and (
        not isinstance(cell_timeout, datetime.timedelta) or cell_timeout.total_seconds() <= 0
    ):
        raise NubladoUsageError(f"cell_timeout must be a positive timedelta, not {cell_timeout!r}")
    if not callable(open_session):
        raise NubladoUsageError("open_session must be callable (for example client.lab_session)")
    if isinstance(notebooks, (str, bytes, os.PathLike)):
        notebooks = [notebooks]
    directory = Path(save_dir).expanduser() if save_dir is not None else None
    if directory is not None:
        _check_save_dir(directory)
    work = load_jobs(notebooks)
    from ._runner import execute_notebook

    batch = _Batch(
        open_session,
        cell_timeout=cell_timeout,
        save_dir=directory,
        logger=logger or default_logger(),
        run_notebook=functools.partial(execute_notebook, queue_cells=queue_cells),
    )
    started_at = datetime.datetime.now(tz=datetime.timezone.utc)
    began = time.monotonic()
    runs: Dict[int, NotebookRun] = {}
    interrupt: Optional[BaseException] = None
    executor = ThreadPoolExecutor(
        max_workers=min(jobs, max(len(work), 1)), thread_name_prefix="nublado-batch"
    )
    try:
        futures: List[Future[NotebookRun]] = [executor.submit(batch.run, job) for job in work]
        while len(runs) < len(work):
            try:
                try:
                    event = batch.events.get(timeout=_POLL)
                except queue.Empty:
                    _raise_worker_bug(futures)
                    continue
                if event.outcome is not None:
                    runs[event.index] = event
                if on_event is not None:
                    on_event(event)
            except KeyboardInterrupt as e:
                # Every notebook still reports its end; a second Ctrl-C
                # waits as well, since leaving now would leave kernels behind.
                if interrupt is None:
                    interrupt = e
                    batch.abort_all()
    finally:
        if len(runs) < len(work):
            # The callback raised: stop everything, and let the workers
            # delete their sessions before the exception goes on.
            batch.abort_all()
        executor.shutdown(wait=True)
    if interrupt is not None:
        raise interrupt
    duration = datetime.timedelta(seconds=time.monotonic() - began)
    return BatchResult([runs[i] for i in range(len(work))], started_at, duration)


def _raise_worker_bug(futures: Sequence[Future[NotebookRun]]) -> None:
    # Workers catch everything a run raises; a future that failed anyway
    # is a bug in this module, and waiting for its event would never end.
    for future in futures:
        if future.done() and not future.cancelled():
            error = future.exception()
            if error is not None:
                raise error
