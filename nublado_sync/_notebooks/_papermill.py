"""The papermill engine ``nublado``: papermill's notebooks run in a Jupyter lab.

Registered under the ``papermill.engine`` entry-point group (install
``nublado_sync[papermill]``), so ``papermill in.ipynb out.ipynb --engine
nublado -p date 2026-12-01`` runs the notebook cell by cell with
`nublado_sync`'s runner: in the user's Nublado lab (spawned when needed,
stopped afterwards when asked), in a plain Jupyter server, or in a private
local one. papermill does the rest as usual: parameters, the output
notebook, its progress bar and `PapermillExecutionError`.

Only papermill imports this module; ``import nublado_sync`` never does.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Any, Dict, Iterator, Optional

import nbformat
from papermill.engines import Engine
from papermill.log import logger as papermill_logger

from .._exceptions import NubladoExecutionError, NubladoUsageError
from .._session import JupyterLabSession
from ._plan import NotebookCell
from ._runner import run_cells

__all__ = ["NubladoEngine"]

ENV_HUB_URL = "NUBLADO_HUB_URL"
ENV_SERVER_URL = "NUBLADO_SERVER_URL"
ENV_USER = "NUBLADO_USER"


def _seconds(value: Any, name: str) -> Optional[datetime.timedelta]:
    if value is None:
        return None
    if isinstance(value, datetime.timedelta):
        return value
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise NubladoUsageError(f"{name} must be a number of seconds, not {value!r}") from None
    if seconds <= 0:
        raise NubladoUsageError(f"{name} must be positive, not {value!r}")
    return datetime.timedelta(seconds=seconds)


class _Settings:
    """Where to run: engine keyword arguments first, then the environment."""

    def __init__(self, options: Dict[str, Any]) -> None:
        env = os.environ
        self.local = bool(options.pop("local", False))
        self.server_url: Optional[str] = options.pop("server_url", None) or env.get(ENV_SERVER_URL)
        self.hub_url: Optional[str] = options.pop("hub_url", None) or env.get(ENV_HUB_URL)
        self.user: Optional[str] = options.pop("user", None) or env.get(ENV_USER)
        self.token: Optional[str] = options.pop("token", None)
        self.token_file: Optional[str] = options.pop("token_file", None)
        self.image: Any = options.pop("image", None)
        self.stop = options.pop("stop", "spawned")
        if self.stop not in ("never", "spawned", "always"):
            raise NubladoUsageError(
                f"stop must be 'never', 'spawned' or 'always', not {self.stop!r}"
            )
        self.spawn_timeout = _seconds(options.pop("spawn_timeout", 600), "spawn_timeout")

    def token_value(self) -> str:
        if self.token:
            return self.token
        from .._token import find_token

        return find_token(self.token_file)


class NubladoEngine(Engine):  # type: ignore[misc]  # papermill is untyped
    """Papermill engine that runs the cells in a Jupyter lab through `nublado_sync`.

    Engine options (``papermill.execute_notebook(..., engine_name="nublado",
    hub_url=..., ...)``): ``hub_url``, ``server_url``, ``local``, ``user``,
    ``token``, ``token_file``, ``image`` (a `NubladoImage`), ``stop``
    (``"never"``, ``"spawned"``: the default, a lab this run spawned, or
    ``"always"``) and ``spawn_timeout`` (seconds). Without them the
    environment is read: ``NUBLADO_SERVER_URL``, ``NUBLADO_HUB_URL`` or
    ``REPERTOIRE_BASE_URL``, ``NUBLADO_USER``, ``NUBLADO_TOKEN`` or
    ``NUBLADO_TOKEN_FILE``.
    """

    @classmethod
    def execute_managed_notebook(
        cls,
        nb_man: Any,
        kernel_name: Optional[str],
        log_output: bool = False,
        stdout_file: Any = None,
        stderr_file: Any = None,
        start_timeout: Any = 60,
        execution_timeout: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Run the notebook held by papermill's execution manager.

        Parameters
        ----------
        nb_man
            papermill's ``NotebookExecutionManager``.
        kernel_name
            Kernel to start (papermill's ``kernel_name``, else the
            notebook's).
        log_output
            Log each output through papermill's logger.
        stdout_file
            File to copy the cells' standard output to.
        stderr_file
            File to copy the cells' standard error to.
        start_timeout
            Seconds allowed for the kernel to start.
        execution_timeout
            Seconds allowed for each cell.
        **kwargs
            The engine options (see the class).

        Returns
        -------
        NotebookNode
            The executed notebook.

        Raises
        ------
        NubladoUsageError
            Bad settings; nothing started.
        NubladoExecutionTimeoutError
            A cell ran past ``execution_timeout``.
        NubladoKernelDiedError
            The kernel died.
        NubladoError
            The lab could not be reached, spawned or used.
        """
        kwargs.pop("input_path", None)
        settings = _Settings(kwargs)
        cell_timeout = _seconds(execution_timeout, "execution_timeout")
        start = _seconds(start_timeout, "start_timeout") or datetime.timedelta(seconds=60)
        notebook = nb_man.nb
        record = notebook.get("metadata", {}).get("papermill", {})
        name = os.path.basename(str(record.get("input_path") or "notebook.ipynb"))
        reporter = _Reporter(nb_man, log_output, stdout_file, stderr_file)
        with _session(settings, kernel_name, start) as session:
            try:
                run_cells(
                    session,
                    notebook,
                    name=name,
                    cell_timeout=cell_timeout,
                    on_cell_start=reporter.start,
                    on_cell_complete=reporter.complete,
                    on_cell_error=reporter.error,
                    on_output=reporter.output,
                    node=nbformat.from_dict,
                )
            except NubladoExecutionError as e:
                if e.result is None or e.result.status not in ("error", "aborted"):
                    reporter.fail_running()
                    raise
                # A cell raised: papermill finds its error output and raises
                # PapermillExecutionError, as with its own engine.
            except BaseException:
                # A timeout, a broken connection, Ctrl-C: the cell failed.
                reporter.fail_running()
                raise
        reporter.finish()
        return notebook


class _Reporter:
    """Tells papermill's manager about each cell, and copies output where asked."""

    def __init__(self, nb_man: Any, log_output: bool, stdout: Any, stderr: Any) -> None:
        self._man = nb_man
        self._log = log_output
        self._files = {"stdout": stdout, "stderr": stderr}
        self._next = 0
        self._running: Optional[int] = None

    def _pass_over(self, until: int) -> None:
        # Cells that do not run (markdown, blank, skip-execution) still
        # count on papermill's progress bar, as with its own engine.
        cells = self._man.nb.cells
        while self._next < until:
            self._man.cell_start(cells[self._next], self._next)
            self._man.cell_complete(cells[self._next], cell_index=self._next)
            self._next += 1

    def start(self, cell: NotebookCell) -> None:
        self._pass_over(cell.index)
        self._running = cell.index
        self._man.cell_start(self._man.nb.cells[cell.index], cell.index)

    def error(self, cell: NotebookCell) -> None:
        self._man.cell_exception(self._man.nb.cells[cell.index], cell_index=cell.index)

    def complete(self, cell: NotebookCell) -> None:
        self._man.cell_complete(self._man.nb.cells[cell.index], cell_index=cell.index)
        self._running = None
        self._next = cell.index + 1

    def fail_running(self) -> None:
        if self._running is not None:
            cell = self._man.nb.cells[self._running]
            self._man.cell_exception(cell, cell_index=self._running)
            self._man.cell_complete(cell, cell_index=self._running)
            self._running = None

    def finish(self) -> None:
        self._pass_over(len(self._man.nb.cells))

    def output(self, output: Dict[str, Any]) -> None:
        self._man.autosave_cell()
        if output["output_type"] == "stream":
            target = self._files.get(output["name"])
            if target is not None:
                target.write(output["text"])
                target.flush()
            if self._log:
                if output["name"] == "stderr":
                    papermill_logger.warning(output["text"])
                else:
                    papermill_logger.info(output["text"])
        elif self._log and "text/plain" in output.get("data", {}):
            papermill_logger.info(output["data"]["text/plain"])


@contextlib.contextmanager
def _session(
    settings: _Settings, kernel_name: Optional[str], start: datetime.timedelta
) -> Iterator[JupyterLabSession]:
    from .._session_manager import open_lab_session

    if settings.local:
        from .._local import local_jupyter_server

        with local_jupyter_server(kernel_name=kernel_name, timeout=start) as server:
            manager = open_lab_session(
                server.url, server.token, username="local", kernel_name=kernel_name
            )
            with manager as session:
                session.wait_until_ready(start)
                yield session
        return
    token = settings.token_value()
    if settings.server_url:
        manager = open_lab_session(
            settings.server_url, token, username=settings.user, kernel_name=kernel_name
        )
        with manager as session:
            session.wait_until_ready(start)
            yield session
        return
    if not settings.user:
        raise NubladoUsageError(
            f"No user for the hub: set {ENV_USER} or the engine option user"
            f" (or {ENV_SERVER_URL} / server_url for a plain Jupyter server)"
        )
    from .._client import NubladoClient

    with NubladoClient(settings.user, token, hub_url=settings.hub_url) as client:
        client.auth_to_hub()
        spawned = False
        if client.is_lab_stopped():
            from .._images import NubladoImageByClass

            client.spawn_lab(settings.image or NubladoImageByClass())
            spawned = True
        try:
            client.wait_for_spawn(settings.spawn_timeout)
            client.auth_to_lab()
            with client.lab_session(kernel_name=kernel_name or "lsst") as session:
                session.wait_until_ready(start)
                yield session
        finally:
            if settings.stop == "always" or (settings.stop == "spawned" and spawned):
                client.stop_lab()
