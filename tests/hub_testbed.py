"""Run a real JupyterHub on loopback that behaves like Rubin's Nublado.

`running_hub` starts ``jupyterhub`` (with configurable-http-proxy from npm)
as a subprocess of the test process, in its own session, with its database,
cookie secret, generated ``jupyterhub_config.py`` and every other file in a
temporary directory. Everything listens on 127.0.0.1 only.

What makes it look like Nublado to a client:

- Authentication: in the Rubin platform an ingress checks the
  ``Authorization: Bearer`` token of every request and the hub's
  authenticator logs the user in from it. Here the authenticator's login
  handler (``hub/bearer/login``, reached through ``auto_login``) reads the
  header itself, maps known tokens to users and sets the hub login cookie;
  a missing token answers 401, an unknown one 403. Hub pages then work by
  cookie, as in the real platform. With ``api_token_login`` each user's
  token is also a JupyterHub API token of that user (as Gafaelfawr
  delegated tokens can be), so hub API calls and lab requests are
  token-authenticated as well.
- Spawning: a `~jupyterhub.spawner.SimpleLocalProcessSpawner` subclass with
  Nublado's options form (``image_list``, ``image_tag``, ``image_class``,
  ``size``, ``enable_debug``). The submitted form lands in ``user_options``
  as the hub passes it to Nublado (a dict of lists of strings) and is
  recorded for the test (`TestHub.spawn_forms`). It sends progress events
  while starting, and a test can make a user's next spawns fail or be slow
  (`TestHub.set_spawn_behaviour`).
- Labs: ``jupyterhub-singleuser`` (JupyterLab) with a kernelspec named
  ``lsst``, isolated from the user's own Jupyter configuration, with the
  ``jupyter_server_documents`` extension (which the Rubin lab images run)
  on or off.
- Optionally per-user subdomains (``subdomains=True``), as in Rubin
  deployments: labs live at ``http://<user>.hub.localhost:<port>/user/<user>/``.
  Those names do not resolve on the test machines, so clients in the test
  process run inside `resolve_localhost_subdomains`. The hub and the labs
  themselves never resolve them: labs reach the hub API on 127.0.0.1, and
  the OAuth redirect check is a string comparison.

Readiness comes from the hub's log, teardown signals the hub's process group
and then kills whatever the hub left (labs, the proxy and kernels each run
in sessions of their own, so they are found by an environment marker that
every one of them inherits). The hub side (authenticator, spawner) is
`tests.hub_plugins`, which the hub loads by path; the process handling is
shared with `tests.jupyter_servers` in `tests.processes`.

Behaviour of JupyterHub 6.1.1 seen through this test bed, beyond the
project's reference on the hub flow:

- A spawn that fails within a second makes ``POST hub/spawn`` itself answer
  500 (the hub waits a second for the spawn before redirecting to
  ``hub/spawn-pending/<user>``); the progress stream then gives one
  ``failed`` event. A later failure (``delay`` and ``fail`` together) gives
  the redirect first.
- With subdomains the lab login goes ``user/<u>/lab`` → ``hub/user/<u>/lab``
  (both on the hub host) → ``http://<u>.hub.localhost:<port>/user/<u>/lab?redirects=1``
  → OAuth on the hub host → ``oauth_callback`` on the lab host → the lab
  page (with ``?redirects=1``). ``jupyterhub-session-id`` is then set with
  ``Domain=hub.localhost``.
- With ``api_token_login`` the lab accepts the bearer token on its pages
  too: ``GET user/<u>/lab`` answers 200 at once, with no OAuth round trip
  and no ``jupyterhub-user-<u>`` cookie; the lab ``_xsrf`` cookie comes on
  that 200 response.
- The hub stops a lab with SIGINT, after which the lab exits without
  shutting its kernels down; they exit about a second later, when ipykernel
  notices that its parent is gone (`TestHub.stop_all` waits for them).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import psutil  # type: ignore[import-untyped,unused-ignore]
import requests

from .hub_plugins import MARKER_VARIABLE, USER_VARIABLE, read_json, write_json
from .processes import (
    KERNEL_NAME,
    OutputReader,
    cookieless_session,
    is_alive,
    stop_group,
    wait_gone,
    write_kernelspec,
)

__all__ = [
    "CHP_INSTALL_COMMAND",
    "KERNEL_NAME",
    "TestHub",
    "find_chp",
    "resolve_localhost_subdomains",
    "running_hub",
]

START_TIMEOUT = 90.0
"""Seconds to wait for the hub to report that it is running."""

STOP_TIMEOUT = 10.0
"""Seconds to wait for the hub to exit after SIGTERM, before SIGKILL."""

SERVER_STOP_TIMEOUT = 30.0
"""Seconds `TestHub.stop_all` waits for the servers to stop."""

CHP_INSTALL_COMMAND = (
    "npm install --no-save --no-audit --no-fund --prefix {repo}/.venv/chp configurable-http-proxy@5"
)
"""How to install configurable-http-proxy where `find_chp` looks first."""

_REPO = Path(__file__).resolve().parent.parent

_READY_RE = re.compile(r"JupyterHub is now running")

# Server extensions installed in the venv that the tests do not need. Turning
# them off makes lab starts faster; jupyterlab stays (``user/<u>/lab`` must
# answer), and jupyter_server_fileid follows the documents extension, whose
# session manager needs it.
_UNNEEDED_EXTENSIONS = ("jupyter_lsp", "jupyter_server_terminals", "notebook_shim")


# --------------------------------------------------------------------------
# Test-process side
# --------------------------------------------------------------------------


@dataclass
class TestHub:
    """A running test JupyterHub.

    Parameters
    ----------
    url
        Hub base URL with a trailing slash: ``http://127.0.0.1:<port>/``, or
        ``http://hub.localhost:<port>/`` with subdomains. Hub pages are under
        ``hub/`` (``hub/home``, ``hub/spawn``…), labs under ``user/<name>/``.
    tokens
        Each user's bearer token (random per hub).
    admin_token
        Token of a hub service allowed to read and stop every user's server
        and to use every lab (scopes ``admin:users``, ``admin:servers``,
        ``access:servers``).
    subdomain_host
        ``http://hub.localhost:<port>`` when labs have per-user subdomains,
        otherwise None.
    api_token_login
        Whether each user's token is also a JupyterHub API token of the user.
    documents
        Whether the labs run the ``jupyter_server_documents`` extension.
    pid
        Process id of the hub (a session and process group leader).
    marker
        Value of the environment variable that every process of this hub
        inherits (see `processes`).
    start_seconds
        How long the hub took from launch to running.
    state_dir
        The temporary directory with the hub's files (database, cookie
        secret, configuration, the users' home directories), removed when
        the hub stops.
    """

    __test__ = False  # Not a test class, whatever pytest thinks of its name.

    url: str
    tokens: dict[str, str]
    admin_token: str = field(repr=False)
    subdomain_host: str | None = None
    api_token_login: bool = False
    documents: bool = False
    pid: int = field(default=0, repr=False)
    marker: str = field(default="", repr=False)
    start_seconds: float = field(default=0.0, repr=False)
    state_dir: Path = field(default=Path(), repr=False)
    _log: OutputReader | None = field(default=None, repr=False)
    _http: requests.Session = field(default_factory=cookieless_session, repr=False)
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _launch: Callable[[], tuple[subprocess.Popen[bytes], OutputReader]] | None = field(
        default=None, repr=False
    )
    _readers: list[OutputReader] = field(default_factory=list, repr=False)

    @property
    def users(self) -> list[str]:
        """The users that can log in."""
        return list(self.tokens)

    def log(self) -> str:
        """Return the output captured so far, for diagnostics.

        Returns
        -------
        str
            The combined output of the hub, the proxy, the labs and their
            kernels.
        """
        return self._log.text() if self._log else ""

    def lab_url(self, user: str) -> str:
        """Return the base URL of a user's lab.

        Parameters
        ----------
        user
            The user name.

        Returns
        -------
        str
            ``<hub url>user/<user>/``, or with subdomains
            ``http://<user>.hub.localhost:<port>/user/<user>/``.
        """
        path = f"user/{quote(user, safe='')}/"
        if self.subdomain_host is None:
            return self.url + path
        parts = urlsplit(self.subdomain_host)
        return f"{parts.scheme}://{user}.{parts.netloc}/{path}"

    def admin_request(self, method: str, url: str, **kw: Any) -> requests.Response:
        """Make a request with the admin token.

        With subdomains the request goes to 127.0.0.1 with the right
        ``Host`` header, so that it works without
        `resolve_localhost_subdomains`.

        Parameters
        ----------
        method
            HTTP method, such as ``"GET"``.
        url
            Absolute URL under the hub or a lab.
        **kw
            Passed to `requests.Session.request`; the timeout defaults to
            30 s and redirects are not followed.

        Returns
        -------
        requests.Response
            The response, whatever its status.
        """
        headers = {"Authorization": f"token {self.admin_token}"}
        headers.update(kw.pop("headers", None) or {})
        parts = urlsplit(url)
        if parts.hostname and parts.hostname.endswith("localhost"):
            headers["Host"] = parts.netloc
            url = parts._replace(netloc=f"127.0.0.1:{parts.port}").geturl()
        kw.setdefault("timeout", 30)
        kw.setdefault("allow_redirects", False)
        return self._http.request(method, url, headers=headers, **kw)

    def user_model(self, user: str) -> dict[str, Any]:
        """Return the hub's model of a user (``GET hub/api/users/<user>``).

        Parameters
        ----------
        user
            The user name.

        Returns
        -------
        dict
            The model; ``servers`` is ``{}`` when the user has no server,
            otherwise ``servers[""]`` has ``ready``, ``pending``, ``url``
            and ``user_options``.

        Raises
        ------
        requests.HTTPError
            If the hub does not know the user (it learns users at their
            first login, or at start with ``api_token_login``).
        """
        response = self.admin_request("GET", f"{self.url}hub/api/users/{quote(user, safe='')}")
        response.raise_for_status()
        model: dict[str, Any] = response.json()
        return model

    def lab_sessions(self, user: str) -> list[dict[str, Any]]:
        """List a user's lab sessions (``GET user/<user>/api/sessions``).

        Parameters
        ----------
        user
            The user name.

        Returns
        -------
        list of dict
            The session models.

        Raises
        ------
        requests.HTTPError
            If the lab does not answer 200 (for instance because it is not
            running).
        """
        response = self.admin_request("GET", self.lab_url(user) + "api/sessions")
        response.raise_for_status()
        sessions: list[dict[str, Any]] = response.json()
        return sessions

    def spawn_forms(self, user: str) -> list[dict[str, Any]]:
        """Return the options of each spawn of a user's lab, oldest first.

        Parameters
        ----------
        user
            The user name.

        Returns
        -------
        list of dict
            The ``user_options`` of each spawn: the submitted form fields
            (without ``_xsrf``), each a list of strings, as the hub hands
            them to Nublado; for example
            ``{"image_class": ["recommended"], "size": ["Large"]}``.
            Failed spawns are included.
        """
        forms = read_json(self.state_dir / "forms.json") or {}
        result: list[dict[str, Any]] = forms.get(user, [])
        return result

    def set_spawn_behaviour(self, user: str, *, fail: bool = False, delay: float = 0.0) -> None:
        """Set how a user's next spawns behave (read at each spawn).

        Parameters
        ----------
        user
            The user name.
        fail
            Make the spawn fail: the spawner raises an error, which the
            progress stream reports with ``failed: true``.
        delay
            Seconds to wait before starting the lab, with a progress event
            each second. A client's wait for the spawn can time out during
            it; `stop_all` interrupts it.
        """
        path = self.state_dir / "behaviour.json"
        behaviour = read_json(path) or {}
        behaviour[user] = {"fail": fail, "delay": delay}
        write_json(path, behaviour)

    def stop_all(self, timeout: float = SERVER_STOP_TIMEOUT) -> float:
        """Stop every user's server, pending spawns included, and wait.

        Parameters
        ----------
        timeout
            Seconds to wait for the servers to stop.

        Returns
        -------
        float
            Seconds it took.

        Raises
        ------
        RuntimeError
            If a server is still there after the timeout, or the hub refuses
            to stop one.
        """
        started = time.monotonic()
        users = []
        for user in self.users:
            response = self.admin_request("GET", f"{self.url}hub/api/users/{quote(user)}")
            if response.status_code == 404:
                continue  # Never logged in.
            response.raise_for_status()
            if response.json().get("servers"):
                users.append(user)
        stopped = set(users)
        for user in users:
            response = self.admin_request("DELETE", f"{self.url}hub/api/users/{quote(user)}/server")
            # 204 stopped, 202 stopping, 400 when the server stopped (or its
            # spawn failed) since the model was read.
            if response.status_code not in (202, 204, 400):
                raise RuntimeError(
                    f"the hub answered {response.status_code} to stopping {user}'s server:"
                    f" {response.text}"
                )
        deadline = started + timeout
        # Polling the hub's state with a short, bounded interval: there is
        # nothing to wait on, and stops take about a second.
        while users:
            users = [user for user in users if self.user_model(user).get("servers")]
            if not users:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"servers of {users} still there after {timeout:.0f} s")
            time.sleep(0.1)
        # A lab stopped by the hub (SIGINT) leaves its kernels behind, and
        # they notice within a second that their parent is gone. In Nublado
        # they go with the lab's pod: wait for them, and kill what is slow.
        leftovers = _marked(self.marker, stopped)
        survivors = wait_gone(leftovers, max(deadline - time.monotonic(), 0.0))
        if survivors:
            wait_gone(survivors, 5, send=signal.SIGKILL)
        return time.monotonic() - started

    def stop_hub(self) -> None:
        """Stop the hub process as a deployment's restart does (SIGTERM).

        The hub stops what it started: its proxy (the public port then
        refuses connections) and, with ``cleanup_servers`` (the test bed's
        setting, JupyterHub's default), every lab, a spawn in progress
        included. The database and the cookie secret stay, so `start_hub`
        brings back the same hub, and logins from before still work.
        """
        if self._process is not None:
            stop_group(self._process, STOP_TIMEOUT)

    def start_hub(self) -> float:
        """Start the hub again after `stop_hub`, on the same ports and state.

        Returns
        -------
        float
            Seconds it took to be running.

        Raises
        ------
        RuntimeError
            If it does not report running within 90 s.
        """
        assert self._launch is not None
        started = time.monotonic()
        self._process, self._log = self._launch()
        self._readers.append(self._log)
        self.pid = self._process.pid
        return time.monotonic() - started

    def processes(self, user: str | None = None) -> list[psutil.Process]:
        """Return the live processes of this hub, or of one user's lab.

        Parameters
        ----------
        user
            If given, only this user's lab and its kernels.

        Returns
        -------
        list of psutil.Process
            The hub, the proxy, the labs and their kernels (every process
            that inherited the hub's marker), zombies left out.
        """
        return _marked(self.marker, None if user is None else {user})


def find_chp() -> str:
    """Find the ``configurable-http-proxy`` command (the npm one).

    Returns
    -------
    str
        ``<repo>/.venv/chp/node_modules/.bin/configurable-http-proxy`` if it
        exists, otherwise the one on ``PATH``.

    Raises
    ------
    RuntimeError
        If there is none; the message says how to install it.
    """
    local = _REPO / ".venv" / "chp" / "node_modules" / ".bin" / "configurable-http-proxy"
    if os.access(local, os.X_OK):
        return str(local)
    found = shutil.which("configurable-http-proxy")
    if found:
        return found
    raise RuntimeError(
        "configurable-http-proxy (5.x, from npm) was not found in"
        f" {local.parent} nor on PATH. Install it with:\n"
        f"    {CHP_INSTALL_COMMAND.format(repo=_REPO)}\n"
        "(the PyPI package of that name is not usable: it breaks WebSockets and"
        " buffers server-sent events)."
    )


@contextlib.contextmanager
def resolve_localhost_subdomains() -> Iterator[None]:
    """Make ``*.localhost`` names resolve to 127.0.0.1 in this process.

    Per-user lab hosts such as ``alice.hub.localhost`` do not resolve on the
    test machines, and system files must not change. `requests` (through
    urllib3) and websocket-client both look names up with
    `socket.getaddrinfo`, which this replaces for the duration of the block.
    Other names resolve as before.

    Yields
    ------
    None
        Nothing; the names resolve inside the block.
    """
    original = socket.getaddrinfo

    def getaddrinfo(
        host: bytes | str | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> Any:
        name = host.decode("ascii", "replace") if isinstance(host, bytes) else host
        if name is not None:
            name = name.rstrip(".").lower()
            if name == "localhost" or name.endswith(".localhost"):
                return original("127.0.0.1", port, socket.AF_INET, type, proto, flags)
        return original(host, port, family, type, proto, flags)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original


def _free_ports(count: int) -> list[int]:
    """Find free TCP ports on 127.0.0.1.

    The sockets are held open together so that the ports differ. The hub and
    the proxy bind them a moment later: the usual small race.
    """
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _lab_args(documents: bool, extra: Sequence[str], rubin_execution: str | None) -> list[str]:
    """Build the single-user servers' command-line options."""
    extensions = dict.fromkeys(_UNNEEDED_EXTENSIONS, False)
    extensions["jupyter_server_documents"] = documents
    extensions["jupyter_server_fileid"] = documents
    # Rubin labs serve notebook execution; the package itself stays off (it
    # imports Rubin-only libraries) and its handler is loaded alone.
    extensions["rsp_jupyter_extensions"] = False
    if rubin_execution:
        extensions[rubin_execution] = True
    return [
        # The test machines run as root.
        "--ServerApp.allow_root=True",
        # Command-line values win over the sys-prefix jupyter_server_config.d
        # files (where jupyter_server_documents enables itself).
        f"--ServerApp.jpserver_extensions={extensions!r}",
        f"--MappingKernelManager.default_kernel_name={KERNEL_NAME}",
        # Nothing may reach beyond 127.0.0.1. JupyterLab fetches from the
        # internet only when its front end asks (news, update check, the
        # PyPI extension manager), which no test client does; turned off all
        # the same.
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.handlers.announcements.NeverCheckForUpdate",
        *extra,
    ]


def _hub_environment(tmp: Path, marker: str, proxy_token: str) -> dict[str, str]:
    """Build the hub's environment, isolated from the user's Jupyter setup."""
    env = {
        key: value
        for key, value in os.environ.items()
        # Drop inherited Jupyter settings (tokens, URLs, directories) that
        # would leak into the hub, and from it into the proxy.
        if not key.startswith(("JUPYTER", "JPY_", "IPYTHON", "CONFIGPROXY"))
    }
    env.update(
        {
            MARKER_VARIABLE: marker,
            # Read by the hub's ConfigurableHTTPProxy (auth_token default)
            # and passed to the proxy it starts; out of any command line.
            "CONFIGPROXY_AUTH_TOKEN": proxy_token,
            "JUPYTER_CONFIG_DIR": str(tmp / "jupyter" / "config"),
            "JUPYTER_DATA_DIR": str(tmp / "jupyter" / "data"),
            "JUPYTER_RUNTIME_DIR": str(tmp / "jupyter" / "runtime"),
            "IPYTHONDIR": str(tmp / "jupyter" / "ipython"),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


_CONFIG_TEMPLATE = '''\
"""JupyterHub configuration of one test hub (generated by {module})."""

import importlib.util
import sys

# The hub side of the test bed (tests/hub_plugins.py): loaded from its
# file, without putting the tests on the hub's sys.path.
_spec = importlib.util.spec_from_file_location("_nublado_hub_plugins", {module!r})
_plugins = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _plugins
_spec.loader.exec_module(_plugins)
_plugins.configure_hub(c, {settings!r})
'''


@contextlib.contextmanager
def running_hub(
    *,
    subdomains: bool = False,
    api_token_login: bool = False,
    documents: bool = False,
    users: Sequence[str] = ("alice", "bob"),
    lab_args: Sequence[str] = (),
) -> Iterator[TestHub]:
    """Run a JupyterHub on 127.0.0.1 for the duration of a block.

    Parameters
    ----------
    subdomains
        Give each user's lab a host of its own
        (``http://<user>.hub.localhost:<port>/user/<user>/``); clients need
        `resolve_localhost_subdomains` to reach them.
    api_token_login
        Make each user's token a JupyterHub API token of the user as well.
    documents
        Run the ``jupyter_server_documents`` extension in the labs (forced
        off otherwise).
    users
        The users who can log in, each with a random token.
    lab_args
        More command-line options for the single-user servers, such as
        ``--ZMQChannelsWebsocketConnection.limit_rate=False``.

    Yields
    ------
    TestHub
        The running hub.

    Raises
    ------
    RuntimeError
        If configurable-http-proxy is missing, or the hub does not report
        that it is running within 90 s, or exits first; the message holds
        its output.
    """
    chp = find_chp()
    marker = secrets.token_hex(8)
    tmp = Path(tempfile.mkdtemp(prefix="jupyterhub-testbed-"))
    processes: list[subprocess.Popen[bytes]] = []
    readers: list[OutputReader] = []
    hub: TestHub | None = None
    try:
        for name in ("config", "data", "runtime", "ipython", "path"):
            (tmp / "jupyter" / name).mkdir(parents=True)
        (tmp / "home").mkdir()
        write_kernelspec(tmp / "jupyter" / "path")
        # Imported here, not at the top: the hub loads this file by path,
        # outside the tests package.
        from . import rubin_execution

        (tmp / "pylib").mkdir()
        rubin_module = None
        if rubin_execution.available():
            rubin_module = rubin_execution.EXTENSION_MODULE
            (tmp / "pylib" / f"{rubin_module}.py").write_text(rubin_execution.EXTENSION_SOURCE)
        public_port, hub_port, api_port = _free_ports(3)
        subdomain_host = f"http://hub.localhost:{public_port}" if subdomains else None
        tokens = {user: secrets.token_urlsafe(32) for user in users}
        admin_token = secrets.token_urlsafe(32)
        settings = {
            "state_dir": str(tmp),
            "public_port": public_port,
            "hub_port": hub_port,
            "api_port": api_port,
            "subdomain_host": subdomain_host,
            "chp": chp,
            "tokens": {token: user for user, token in tokens.items()},
            "api_token_login": api_token_login,
            "admin_token": admin_token,
            "marker": marker,
            "python": sys.executable,
            "lab_args": _lab_args(documents, lab_args, rubin_module),
            "pylib": str(tmp / "pylib"),
        }
        write_json(tmp / "settings.json", settings)
        (tmp / "jupyterhub_config.py").write_text(
            _CONFIG_TEMPLATE.format(
                module=str(Path(__file__).resolve().with_name("hub_plugins.py")),
                settings=str(tmp / "settings.json"),
            )
        )
        proxy_token = secrets.token_hex(24)

        def launch() -> tuple[subprocess.Popen[bytes], OutputReader]:
            process = subprocess.Popen(
                [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
                cwd=tmp,
                env=_hub_environment(tmp, marker, proxy_token),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own session: one killpg reaches the hub and its helpers.
                start_new_session=True,
            )
            processes.append(process)
            assert process.stdout is not None
            reader = OutputReader(process.stdout, _READY_RE, "jupyterhub-log")
            readers.append(reader)
            reader.ready.wait(START_TIMEOUT)
            if not reader.running:
                why = "exited" if reader.finished.is_set() else "did not start"
                raise RuntimeError(
                    f"JupyterHub {why} within {START_TIMEOUT:.0f} s (exit status"
                    f" {process.poll()}); its output:\n{reader.text()}"
                )
            return process, reader

        started = time.monotonic()
        process, reader = launch()
        hub = TestHub(
            url=(subdomain_host or f"http://127.0.0.1:{public_port}") + "/",
            tokens=tokens,
            admin_token=admin_token,
            subdomain_host=subdomain_host,
            api_token_login=api_token_login,
            documents=documents,
            pid=process.pid,
            marker=marker,
            start_seconds=time.monotonic() - started,
            state_dir=tmp,
            _log=reader,
            _process=process,
            _launch=launch,
        )
        yield hub
    finally:
        if hub is not None:
            hub._http.close()
        # Every hub process this block started (a restart starts another).
        # Newest first: stopping one also ends what is left of the others.
        for process, reader in reversed(list(zip(processes, readers))):
            _stop(process, marker)
            # The reader sees end of file once every process holding the
            # pipe has exited; only then may the pipe be closed.
            reader.join(5)
            if process.stdout is not None and reader.finished.is_set():
                process.stdout.close()
        for process in processes[len(readers) :]:
            _stop(process, marker)
        shutil.rmtree(tmp, ignore_errors=True)


def _marked(marker: str, users: Collection[str] | None = None) -> list[psutil.Process]:
    """Find the live processes whose environment carries a hub's marker.

    Parameters
    ----------
    marker
        The hub's marker.
    users
        If given, only the labs of these users and their kernels.

    Returns
    -------
    list of psutil.Process
        The processes, zombies left out.
    """
    found = []
    for proc in psutil.process_iter(["environ"]):
        # Processes of other users, and zombies, have no readable environ.
        environ = proc.info.get("environ") or {}
        if environ.get(MARKER_VARIABLE) != marker:
            continue
        if users is not None and environ.get(USER_VARIABLE) not in users:
            continue
        if is_alive(proc):
            found.append(proc)
    return found


def _stop(process: subprocess.Popen[bytes], marker: str) -> None:
    """Stop the hub and everything it started."""
    # SIGTERM lets the hub stop the labs and the proxy itself.
    stop_group(process, STOP_TIMEOUT)
    # Whatever is left, each in a session of its own: kernels (a lab that
    # the hub stops with SIGINT leaves them behind), labs and a proxy that
    # the hub could not stop.
    survivors = wait_gone(_marked(marker), STOP_TIMEOUT, send=signal.SIGTERM)
    if survivors:
        wait_gone(survivors, 5, send=signal.SIGKILL)
