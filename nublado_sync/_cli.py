"""The ``nublado-sync`` command: run code in a Nublado lab from cron or a shell.

Exit statuses (also in the docs):

===  ==========================================================
0    success
1    the code failed (an exception in a cell, or the kernel died)
2    usage error (bad arguments, missing token or user)
3    timeout (code, spawn, or stop)
4    the lab did not spawn
5    authentication, HTTP or WebSocket failure
129  hung up (SIGHUP: the terminal closed), cleaned up as for Ctrl-C
130  interrupted (Ctrl-C); the kernel was interrupted and the session deleted
143  terminated (SIGTERM), cleaned up as for Ctrl-C
===  ==========================================================
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import logging
import os
import signal
import sys
from enum import IntEnum
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Sequence,
    TextIO,
    Union,
)

from . import __version__, _cli_messages
from ._exceptions import (
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoSpawnError,
    NubladoTimeoutError,
    NubladoUsageError,
)
from ._images import (
    SPAWN_FORM_CLASSES,
    NubladoImage,
    NubladoImageByClass,
    NubladoImageByReference,
    NubladoImageByTag,
    NubladoImageClass,
    NubladoImageSize,
)
from ._logging import DeferredLogger, Logger
from ._models import ExecutionResult, SpawnProgressMessage
from ._notebooks._options import add_parameter_options, checked_notebook, parameters_from
from ._reasons import one_line
from ._redact import strip_ansi
from ._retry import RetryPolicy
from ._session_manager import JupyterLabSessionManager, open_lab_session

if TYPE_CHECKING:
    from ._client import NubladoClient
    from ._session import JupyterLabSession

__all__ = ["ExitCode", "main"]


class ExitCode(IntEnum):
    """Exit statuses of ``nublado-sync``."""

    OK = 0
    CODE_ERROR = 1
    USAGE = 2
    TIMEOUT = 3
    SPAWN_FAILED = 4
    WEB_ERROR = 5
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


ENV_HUB_URL = "NUBLADO_HUB_URL"
ENV_USER = "NUBLADO_USER"
ENV_TOKEN = "NUBLADO_TOKEN"  # noqa: S105 - the variable's name, not a token
ENV_TOKEN_FILE = "NUBLADO_TOKEN_FILE"  # noqa: S105
ENV_SERVER_URL = "NUBLADO_SERVER_URL"


class _UsageError(Exception):
    """Bad command-line input: reported with exit status 2."""


class _Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: interrupt, clean up, exit 143 or 129."""

    def __init__(self, signum: int = signal.SIGTERM) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise _Terminated(signum)


# Exit statuses in --help: the same list as the module docstring.
_EXIT_STATUSES = """exit status:
  0    success
  1    the code failed (an exception in a cell, or the kernel died)
  2    usage error (bad arguments, files, token or user), found before anything starts
  3    timeout (--timeout, --spawn-timeout, stop's --timeout, or opening the session)
  4    the lab did not spawn
  5    connection, authentication, HTTP or WebSocket failure
  129  hung up (SIGHUP), 130 interrupted (Ctrl-C), 143 terminated (SIGTERM):
       cleaned up first (kernel interrupted, session deleted, --local server stopped)"""


def _seconds(text: str) -> datetime.timedelta:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return datetime.timedelta(seconds=value)


def _jobs(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _logging_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-json", action="store_true", help="log as JSON lines")
    parser.add_argument("-v", "--verbose", action="count", help="more logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="log only errors")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nublado-sync",
        description="Run Python code and notebooks in a Nublado (JupyterHub) lab.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"Connection settings come from options or the environment: {ENV_HUB_URL} (or\n"
            f"REPERTOIRE_BASE_URL for service discovery), {ENV_USER}, and the token from\n"
            f"{ENV_TOKEN} or the file named by {ENV_TOKEN_FILE} or --token-file (inside a\n"
            "Rubin lab, from where the lab keeps it). The token is never taken from the\n"
            "command line, which other users can read.\n\n" + _EXIT_STATUSES
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _logging_options(parser)
    parser.set_defaults(log_json=False, verbose=0, quiet=False)
    # The same options after the command name too; SUPPRESS keeps a value
    # given before it.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _logging_options(common)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def connection(sub: argparse.ArgumentParser) -> None:
        group = sub.add_argument_group("connection")
        group.add_argument("--hub-url", help=f"hub base URL (default: ${ENV_HUB_URL})")
        group.add_argument("--user", help=f"username (default: ${ENV_USER})")
        group.add_argument("--token-file", type=Path, help="file holding the token")
        group.add_argument("--ca-bundle", help="CA bundle to verify the hub's TLS certificate")
        group.add_argument(
            "--http-timeout",
            type=_seconds,
            default=_seconds("30"),
            metavar="SECONDS",
            help="timeout of each HTTP request, in seconds (default: 30)",
        )
        group.add_argument(
            "--retries",
            type=_retries,
            default=RetryPolicy().retries,
            help=f"retries of a request that failed for a passing reason; 0: none"
            f" ({RetryPolicy().retries})",
        )
        group.add_argument(
            "--retry-deadline",
            type=_seconds,
            help="seconds one request may take, its retries included (default: --http-timeout)",
        )

    def image(sub: argparse.ArgumentParser) -> None:
        group = sub.add_argument_group("lab image (when a lab has to be spawned)")
        choice = group.add_mutually_exclusive_group()
        choice.add_argument(
            "--image-class",
            choices=[c.value for c in SPAWN_FORM_CLASSES],
            help="image class (default: recommended)",
        )
        choice.add_argument("--image-tag", help="image tag")
        choice.add_argument("--image-reference", help="full image reference")
        group.add_argument(
            "--size",
            choices=[s.value for s in NubladoImageSize],
            default="Large",
            help="lab size (default: Large)",
        )
        group.add_argument("--debug-image", action="store_true", help="enable lab debugging")
        group.add_argument(
            "--spawn-timeout",
            type=_seconds,
            default=_seconds("600"),
            metavar="SECONDS",
            help="how long the lab may take to start, in seconds (default: 600)",
        )

    run = commands.add_parser(
        "run",
        parents=[common],
        help="run code, a file or a notebook",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_EXIT_STATUSES,
    )
    run.add_argument("-c", dest="code", help="code to run")
    run.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help=(
            "Python file or .ipynb notebook; - for stdin. Several notebooks, or"
            " directories (every .ipynb below them), run as a batch"
        ),
    )
    where = run.add_mutually_exclusive_group()
    where.add_argument(
        "--local",
        action="store_true",
        help="run in a private Jupyter server on this machine (needs nublado_sync[local])",
    )
    where.add_argument(
        "--server-url",
        help="run in a plain Jupyter server at this URL (no hub), with the same token settings"
        f" (default: ${ENV_SERVER_URL})",
    )
    run.add_argument(
        "--kernel",
        help="kernel name (default: lsst on a hub; the server's default kernel with --local"
        " or --server-url)",
    )
    run.add_argument(
        "--timeout",
        type=_seconds,
        metavar="SECONDS",
        help="deadline of the code, or of each notebook cell, in seconds (default: none)",
    )
    run.add_argument(
        "--reconnects",
        type=_retries,
        metavar="N",
        help=(
            "times a dropped kernel connection is opened again before the run fails;"
            f" 0: never (default: {_DEFAULT_RECONNECTS})"
        ),
    )
    run.add_argument(
        "--open-timeout",
        type=_seconds,
        metavar="SECONDS",
        help=(
            "how long opening a kernel session may take, its WebSocket and the new"
            " kernel's first answer (default: 60; a crowded lab starts kernels slowly)"
        ),
    )
    stop_group = run.add_mutually_exclusive_group()
    stop_group.add_argument(
        "--stop", action="store_true", help="stop the lab afterwards if this command spawned it"
    )
    stop_group.add_argument(
        "--stop-always", action="store_true", help="stop the lab afterwards in any case"
    )
    run.add_argument(
        "--save-notebook",
        type=Path,
        help="write the executed notebook to this file, or into this directory",
    )
    run.add_argument(
        "--cell-by-cell",
        action="store_true",
        help=(
            "send each notebook cell when the one before it is done, instead of"
            " queueing them all at once as JupyterLab's Run All does"
        ),
    )
    batch = run.add_argument_group("many notebooks (a batch)")
    batch.add_argument(
        "--jobs",
        type=_jobs,
        help=(
            "most notebooks run at once, each in a fresh kernel of the same lab"
            " (default 2: they share the lab's CPUs and memory)"
        ),
    )
    batch.add_argument(
        "--junit-xml",
        type=Path,
        metavar="FILE",
        help="write a JUnit XML report (one test per notebook)",
    )
    run.add_argument("--json", action="store_true", help="print one JSON result")
    add_parameter_options(run)
    connection(run)
    image(run)

    spawn = commands.add_parser(
        "spawn", parents=[common], help="start the lab if it is not running"
    )
    spawn.add_argument("--no-wait", action="store_true", help="do not wait until it is ready")
    connection(spawn)
    image(spawn)

    stop = commands.add_parser("stop", parents=[common], help="stop the lab")
    stop.add_argument("--wait", action="store_true", help="wait until it is gone")
    stop.add_argument(
        "--timeout",
        type=_seconds,
        default=_seconds("300"),
        metavar="SECONDS",
        help="how long --wait waits, in seconds (default: 300)",
    )
    connection(stop)

    status = commands.add_parser("status", parents=[common], help="tell whether the lab is running")
    status.add_argument("--json", action="store_true", help="print JSON")
    connection(status)
    return parser


def _logger(args: argparse.Namespace) -> Logger:
    level = logging.INFO
    if args.quiet:
        level = logging.ERROR
    elif args.verbose:
        level = logging.DEBUG
    log_json = args.log_json

    def build() -> Logger:
        import structlog

        renderer: Any = (
            structlog.processors.JSONRenderer()
            if log_json
            else structlog.dev.ConsoleRenderer(colors=False)
        )
        logger: Logger = structlog.wrap_logger(
            structlog.PrintLogger(sys.stderr),
            wrapper_class=structlog.make_filtering_bound_logger(level),
            processors=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.processors.format_exc_info,
                renderer,
            ],
        )
        return logger

    # Built on the first message: most runs log nothing before the code's
    # first output, and structlog's import would delay it.
    return DeferredLogger(build, lambda lv: lv >= level)


def _token(args: argparse.Namespace) -> str:
    # Our settings, then Rubin's places inside a lab (see nublado_sync.find_token).
    from ._token import find_token

    try:
        return find_token(args.token_file)
    except NubladoUsageError as e:
        raise _UsageError(e.message) from None


def _client(args: argparse.Namespace, logger: Logger) -> NubladoClient:
    user = args.user or os.environ.get(ENV_USER)
    if not user:
        raise _UsageError(f"no user: set {ENV_USER} or --user")
    # Imported here: a run against a lab URL never needs the hub client.
    from ._client import NubladoClient

    return NubladoClient(
        user,
        _token(args),
        hub_url=args.hub_url or os.environ.get(ENV_HUB_URL) or None,
        logger=logger,
        timeout=args.http_timeout,
        verify=_ca_bundle(args),
        retry=_retry_policy(args),
    )


def _retry_policy(args: argparse.Namespace) -> RetryPolicy:
    return RetryPolicy(retries=args.retries, deadline=args.retry_deadline)


# ReconnectPolicy's default attempts, said in --help without importing it.
_DEFAULT_RECONNECTS = 8


def _session_options(args: argparse.Namespace) -> Dict[str, Any]:
    """Return the session options set on the command line (none: the defaults)."""
    options: Dict[str, Any] = {}
    open_timeout = getattr(args, "open_timeout", None)
    if open_timeout is not None:
        options["websocket_open_timeout"] = open_timeout
    attempts = getattr(args, "reconnects", None)
    if attempts == 0:
        options["reconnect"] = None
    elif attempts is not None:
        from ._reconnect import ReconnectPolicy

        options["reconnect"] = ReconnectPolicy(max_attempts=attempts)
    return options


def _retries(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"not a whole number, 0 or more: {text!r}")
    return value


def _ca_bundle(args: argparse.Namespace) -> Union[bool, str]:
    return os.path.expanduser(args.ca_bundle) if args.ca_bundle else True


def _image(args: argparse.Namespace) -> NubladoImage:
    size = NubladoImageSize(args.size)
    if args.image_tag:
        return NubladoImageByTag(args.image_tag, size, args.debug_image)
    if args.image_reference:
        return NubladoImageByReference(args.image_reference, size, args.debug_image)
    image_class = NubladoImageClass(args.image_class or "recommended")
    return NubladoImageByClass(image_class, size, args.debug_image)


class _ProgressDisplay:
    """Spawn progress: a bar on a terminal, log lines otherwise (cron)."""

    def __init__(self, logger: Logger, stream: TextIO) -> None:
        self._logger = logger
        self._stream = stream
        self._bar = stream.isatty()

    def __call__(self, message: SpawnProgressMessage) -> None:
        if self._bar:
            filled = max(0, min(message.progress, 100)) * 30 // 100
            bar = "#" * filled + "-" * (30 - filled)
            text = message.message[:60]
            self._stream.write(f"\r[{bar}] {message.progress:3d}% {text:<60}")
            if message.ready or message.failed:
                self._stream.write("\n")
            self._stream.flush()
        else:
            self._logger.info("Spawn progress", progress=message.progress, message=message.message)


def _spawn_if_stopped(client: NubladoClient, args: argparse.Namespace, logger: Logger) -> bool:
    """Log in and spawn the lab unless it exists; tell whether it spawned one."""
    client.auth_to_hub()
    if not client.is_lab_stopped():
        return False
    image = _image(args)
    logger.info("Spawning lab", image=image.to_spawn_form())
    client.spawn_lab(image)
    return True


def _wait_for_lab(client: NubladoClient, args: argparse.Namespace, logger: Logger) -> None:
    # Also for a lab this command did not spawn: it may still be starting
    # (the hub answers at once for a running one).
    client.wait_for_spawn(args.spawn_timeout, on_progress=_ProgressDisplay(logger, sys.stderr))
    client.auth_to_lab()


def _read_source(args: argparse.Namespace) -> tuple[str, Optional[str]]:
    """Return the code or notebook text and the notebook name (None for code)."""
    if args.code is not None:
        return args.code, None
    if args.file == "-":
        return sys.stdin.read(), None
    try:
        text = Path(args.file).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise _UsageError(f"cannot read {args.file}: {e}") from None
    return text, (Path(args.file).name if args.file.endswith(".ipynb") else None)


class _Runner:
    """Runs the code or notebook in a session and reports it."""

    def __init__(self, args: argparse.Namespace, logger: Logger) -> None:
        self.args = args
        self.logger = logger
        self.report: Dict[str, Any] = {}
        # Whether code reached a kernel: what an interrupt message may claim.
        self.code_started = False

    def _echo(self, output: Dict[str, Any]) -> None:
        if output["output_type"] == "stream":
            stream = sys.stderr if output["name"] == "stderr" else sys.stdout
            stream.write(output["text"])
            stream.flush()
        elif output["output_type"] in ("execute_result", "display_data"):
            text = output.get("data", {}).get("text/plain")
            if text is not None:
                sys.stdout.write(f"{text}\n")
                sys.stdout.flush()

    def run(self, session: JupyterLabSession, text: str, notebook: Optional[str]) -> None:
        on_output = None if self.args.json else self._echo
        if notebook is None:
            result = session.execute(text, timeout=self.args.timeout, on_output=on_output)
            self.report.update(_result_json(result))
            return
        # The runner loads only for notebooks.
        from ._notebooks._progress import CellProgress
        from ._notebooks._runner import execute_notebook

        # Which cell of how many runs, and for how long.
        progress = CellProgress(self.logger, sys.stderr)
        try:
            executed = execute_notebook(
                session,
                text,
                name=notebook,
                cell_timeout=self.args.timeout,
                hooks=progress,
                on_output=progress.wrap_output(on_output),
                queue_cells=not self.args.cell_by_cell,
            )
        except (NubladoExecutionError, NubladoExecutionTimeoutError) as e:
            progress.close()
            # The notebook's failure is the news; a failure to save it too
            # is only logged.
            try:
                self._save(e.notebook)
            except _UsageError as save_error:
                self.logger.warning("Could not save the notebook", error=one_line(str(save_error)))
            raise
        finally:
            progress.close()
        self._save(executed)

    def _save(self, executed: Optional[str]) -> None:
        if executed is not None and self.args.save_notebook:
            path = self.args.save_notebook.expanduser()
            try:
                path.write_text(executed, encoding="utf-8")
            except OSError as e:
                raise _UsageError(f"cannot write {path}: {e.strerror}") from None
            self.report["notebook"] = str(path)


def _result_json(result: ExecutionResult) -> Dict[str, Any]:
    value = result.result
    return {
        "stdout": result.stdout,
        "stderr": result.stderr,
        "result": value.get("text/plain") if value else None,
        "displays": [d.get("text/plain") for d in result.displays],
        "output_lost": result.output_lost,
        "duration_seconds": result.duration.total_seconds() if result.duration else None,
    }


def _check_notebook(
    args: argparse.Namespace, text: str, name: str, parameters: Optional[Dict[str, Any]]
) -> str:
    """Refuse a notebook that cannot run, naming its file; return it ready to run."""
    try:
        return checked_notebook(text, name, parameters)
    except NubladoUsageError as e:
        raise _UsageError(f"cannot run {args.file}: {e.message}") from None


def _check_save_target(args: argparse.Namespace, notebook: Optional[str]) -> None:
    if args.save_notebook is None:
        return
    if notebook is None:
        raise _UsageError("--save-notebook needs a .ipynb notebook to run")
    given = args.save_notebook
    target = given.expanduser().resolve()
    if target.is_dir():
        # A directory takes the notebook under its own name.
        given = given / notebook
        target = target / notebook
        args.save_notebook = target
    problem = None
    if target.is_dir():
        problem = "it is a directory"
    elif target.exists() and not os.access(target, os.W_OK):
        problem = "the file is not writable"
    elif not target.parent.is_dir():
        problem = f"there is no directory {given.parent}"
    elif not os.access(target.parent, os.W_OK):
        problem = f"the directory {given.parent} is not writable"
    if problem:
        raise _UsageError(f"cannot write the notebook to {given}: {problem}")


def _validated_source(args: argparse.Namespace) -> tuple[str, Optional[str]]:
    """Read and check every input of ``run``: before anything starts.

    A bad notebook or output path found after a lab spawned (or a local
    server started, or an hour of work) is found too late.
    """
    text, notebook = _read_source(args)
    # The notebook and its parameters are checked before anything starts.
    parameters = parameters_from(args)
    if notebook is not None:
        text = _check_notebook(args, text, notebook, parameters)
    elif parameters is not None:
        raise _UsageError("-p, -r and -f need a .ipynb notebook to run")
    _check_save_target(args, notebook)
    return text, notebook


def _command_run(args: argparse.Namespace, logger: Logger, runner: _Runner) -> ExitCode:
    if args.code is not None and args.files:
        raise _UsageError("give either -c CODE or files to run, not both")
    if args.code is None and not args.files:
        raise _UsageError("nothing to run: give -c CODE, a file, a notebook or a directory")
    if _batch_mode(args):
        from ._cli_batch import check_batch_args

        check_batch_args(args)
        with _session_opener(args, logger, None) as open_session:
            from ._cli_batch import run_batch

            return run_batch(args, logger, open_session, runner.report)
    args.file = args.files[0] if args.files else None
    text, notebook = _validated_source(args)
    with _session_opener(args, logger, notebook) as open_session:
        _run_in(open_session(notebook), runner, text, notebook)
    return ExitCode.OK


def _batch_mode(args: argparse.Namespace) -> bool:
    """Many notebooks, a directory, or a batch option: the batch runner runs them."""
    files: List[str] = args.files
    return (
        len(files) > 1
        or any(f != "-" and Path(f).expanduser().is_dir() for f in files)
        or args.jobs is not None
        or args.junit_xml is not None
    )


SessionOpener = Callable[[Optional[str]], JupyterLabSessionManager]


@contextlib.contextmanager
def _session_opener(
    args: argparse.Namespace, logger: Logger, notebook: Optional[str]
) -> Iterator[SessionOpener]:
    """Get to the lab and yield a maker of fresh sessions there.

    The lab is a local server, a server at a URL, or the user's lab behind
    the hub, spawned if need be (and stopped afterwards when asked).
    """
    if args.local:
        # Only --local needs it; cold runs against a lab skip its imports.
        from ._local import local_jupyter_server

        with local_jupyter_server(kernel_name=args.kernel, logger=logger) as server:
            yield lambda name: open_lab_session(
                server.url,
                server.token,
                username="local",
                kernel_name=args.kernel,
                notebook_name=name,
                logger=logger,
                **_session_options(args),
            )
        return
    if not args.local and not args.server_url:
        # A plain Jupyter server from the environment, as for the papermill engine.
        args.server_url = os.environ.get(ENV_SERVER_URL) or None
    if args.server_url:
        token = _token(args)
        yield lambda name: open_lab_session(
            args.server_url,
            token,
            username=args.user or os.environ.get(ENV_USER) or None,
            kernel_name=args.kernel,
            notebook_name=name,
            timeout=args.http_timeout,
            verify=_ca_bundle(args),
            logger=logger,
            retry=_retry_policy(args),
            **_session_options(args),
        )
        return
    with _client(args, logger) as client:
        spawned = _spawn_if_stopped(client, args, logger)
        try:
            _wait_for_lab(client, args, logger)
            kernel = args.kernel or "lsst"
            options = _session_options(args)
            yield lambda name: client.lab_session(name, kernel_name=kernel, **options)
        finally:
            if args.stop_always or (args.stop and spawned):
                _stop_quietly(client, logger)


def _stop_quietly(client: NubladoClient, logger: Logger) -> None:
    # Runs on the way out of a failure too; its own failure must not hide
    # the one that matters.
    try:
        client.stop_lab()
    except NubladoError as e:
        logger.warning("Could not stop the lab", error=one_line(str(e)))


def _run_in(
    manager: JupyterLabSessionManager, runner: _Runner, text: str, notebook: Optional[str]
) -> None:
    with manager as session:
        runner.code_started = True
        runner.run(session, text, notebook)


def _command_spawn(args: argparse.Namespace, logger: Logger) -> None:
    with _client(args, logger) as client:
        if not _spawn_if_stopped(client, args, logger):
            logger.info("Lab is already running or starting")
        if not args.no_wait:
            client.wait_for_spawn(
                args.spawn_timeout, on_progress=_ProgressDisplay(logger, sys.stderr)
            )
            logger.info("Lab is ready")


def _command_stop(args: argparse.Namespace, logger: Logger) -> None:
    with _client(args, logger) as client:
        client.auth_to_hub()
        client.stop_lab()
        if args.wait:
            client.wait_for_lab_stopped(args.timeout)
            logger.info("Lab is stopped")


def _command_status(args: argparse.Namespace, logger: Logger) -> None:
    with _client(args, logger) as client:
        client.auth_to_hub()
        stopped = client.is_lab_stopped()
    if args.json:
        print(json.dumps({"user": client.username, "running": not stopped}))
    else:
        print("stopped" if stopped else "running")


def _exit_code(exc: BaseException) -> ExitCode:
    if isinstance(exc, (NubladoExecutionTimeoutError, NubladoTimeoutError)):
        return ExitCode.TIMEOUT
    if isinstance(exc, NubladoExecutionError):
        return ExitCode.CODE_ERROR
    if isinstance(exc, NubladoSpawnError):
        return ExitCode.SPAWN_FAILED
    if isinstance(exc, (NubladoUsageError, _UsageError)):
        return ExitCode.USAGE
    return ExitCode.WEB_ERROR


def _mode(args: argparse.Namespace) -> str:
    if getattr(args, "local", False):
        return _cli_messages.LOCAL
    if getattr(args, "server_url", None):
        return _cli_messages.SERVER
    return _cli_messages.HUB


def _source_name(args: argparse.Namespace) -> Optional[str]:
    """Return the code's file as the user named it; `None` for ``-c`` code."""
    file = getattr(args, "file", None)
    if not file:
        return None
    return "code from standard input" if file == "-" else str(file)


def _interrupt_kind(e: KeyboardInterrupt) -> tuple[ExitCode, str, str]:
    """Exit status, JSON error type and message word for a signal."""
    if isinstance(e, _Terminated):
        if e.signum == getattr(signal, "SIGHUP", None):
            return ExitCode.HANGUP, "HangUp", "hung up"
        return ExitCode.TERMINATED, "Terminated", "terminated"
    return ExitCode.INTERRUPTED, "Interrupted", "interrupted"


@contextlib.contextmanager
def _reported(
    args: argparse.Namespace,
    logger: Logger,
    report: Dict[str, Any],
    runner: Optional[_Runner] = None,
) -> Iterator[List[ExitCode]]:
    status = [ExitCode.OK]
    try:
        yield status
    except KeyboardInterrupt as e:
        status[0], kind, what = _interrupt_kind(e)
        report["error"] = {"type": kind, "message": what}
        started = runner is not None and runner.code_started
        local = _mode(args) == _cli_messages.LOCAL
        logger.warning(_cli_messages.interrupted(what.capitalize(), started, local))
    except (NubladoError, _UsageError) as e:
        status[0] = _exit_code(e)
        kind = "UsageError" if isinstance(e, _UsageError) else type(e).__name__
        report["error"] = {"type": kind, "message": strip_ansi(str(e))}
        result = getattr(e, "result", None)
        if isinstance(result, ExecutionResult):
            report.update(_result_json(result))
            if result.ename:
                report["error"].update(
                    ename=result.ename,
                    evalue=result.evalue,
                    traceback=[strip_ansi(t) for t in result.traceback],
                )
        if not getattr(args, "json", False):
            text = _cli_messages.describe(e, _mode(args), sys.stderr.isatty(), _source_name(args))
            sys.stderr.write(text + "\n")
    report["exit_code"] = int(status[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``nublado-sync`` command.

    Parameters
    ----------
    argv
        Arguments, without the program name; `sys.argv` when omitted.

    Returns
    -------
    int
        The exit status (see the module documentation).
    """
    args = _parser().parse_args(argv)
    logger = _logger(args)
    # Kubernetes deadlines, timeout(1) and kill send SIGTERM, a closed
    # terminal SIGHUP: clean up as for Ctrl-C rather than leave a session
    # (or a --local server, its kernel and its files) behind.
    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), _raise_terminated)
    report: Dict[str, Any] = {}
    runner = _Runner(args, logger) if args.command == "run" else None
    with _reported(args, logger, report, runner) as status:
        if runner is not None:
            runner.report = report
            status[0] = _command_run(args, logger, runner)
        elif args.command == "spawn":
            _command_spawn(args, logger)
        elif args.command == "stop":
            _command_stop(args, logger)
        else:
            _command_status(args, logger)
    if getattr(args, "json", False) and (args.command == "run" or status[0] != ExitCode.OK):
        report["ok"] = status[0] == ExitCode.OK
        print(json.dumps(report))
    return int(status[0])
