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
every one of them inherits).

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

import collections
import contextlib
import http.cookiejar
import json
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, urlsplit

import psutil  # type: ignore[import-untyped,unused-ignore]
import requests

__all__ = [
    "CHP_INSTALL_COMMAND",
    "KERNEL_NAME",
    "TestHub",
    "find_chp",
    "resolve_localhost_subdomains",
    "running_hub",
]

KERNEL_NAME = "lsst"
"""Name of the kernelspec every test lab offers, and its default."""

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

ADMIN_SERVICE = "testbed-admin"
"""Name of the hub service whose token is `TestHub.admin_token`."""

_REPO = Path(__file__).resolve().parent.parent

# Every process of a test hub (the hub, the proxy, labs and kernels) inherits
# this variable, whose value is unique per hub: the only reliable way to find
# them all, since the proxy, each lab and each kernel run in a session of
# their own.
_MARKER_VARIABLE = "NUBLADO_TESTBED_HUB"

# Every process of a lab (the lab and its kernels) inherits this one, whose
# value is the user's name.
_USER_VARIABLE = "NUBLADO_TESTBED_USER"

_READY_RE = re.compile(r"JupyterHub is now running")

# Lines of output kept for diagnostics: the hub's, the proxy's, the labs'
# and the kernels' (they all inherit the hub's stdout).
_LOG_LINES = 20000

# Server extensions installed in the venv that the tests do not need. Turning
# them off makes lab starts faster; jupyterlab stays (``user/<u>/lab`` must
# answer), and jupyter_server_fileid follows the documents extension, whose
# session manager needs it.
_UNNEEDED_EXTENSIONS = ("jupyter_lsp", "jupyter_server_terminals", "notebook_shim")

# The options form of Nublado's spawner, reduced to the fields a client
# submits (the real one offers menus of images built from the registry).
_OPTIONS_FORM = """
<div class="form-group">
  <p>Image</p>
  <label><input type="radio" name="image_class" value="recommended" checked>
    Recommended</label>
  <label><input type="radio" name="image_class" value="latest-release">
    Latest release</label>
  <label><input type="radio" name="image_class" value="latest-weekly">
    Latest weekly</label>
  <label><input type="radio" name="image_class" value="latest-daily">
    Latest daily</label>
  <label>Tag <input type="text" name="image_tag" value=""></label>
  <label>Image reference <input type="text" name="image_list" value=""></label>
</div>
<div class="form-group">
  <label>Size
    <select name="size">
      <option value="Fine">Fine</option>
      <option value="Diminutive">Diminutive</option>
      <option value="Tiny">Tiny</option>
      <option value="Small">Small</option>
      <option value="Medium">Medium</option>
      <option value="Large" selected>Large</option>
      <option value="Huge">Huge</option>
      <option value="Gargantuan">Gargantuan</option>
      <option value="Colossal">Colossal</option>
    </select>
  </label>
  <label><input type="checkbox" name="enable_debug" value="true"> Enable debug logs</label>
</div>
"""


# --------------------------------------------------------------------------
# Test-process side
# --------------------------------------------------------------------------


class _LogReader:
    """Drain the hub's output in a thread and watch for readiness.

    The hub's stdout and stderr share one pipe, which the proxy, the labs
    and the kernels inherit. It is read until end of file so that it never
    fills up and blocks them, and the lines are kept for diagnostics.

    Parameters
    ----------
    stream
        The read end of the output pipe.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES)
        self._lock = threading.Lock()
        self.running = False
        # Set once the hub runs or the output has ended, whichever comes
        # first, so that a hub dying at start does not cost the timeout.
        self.ready = threading.Event()
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jupyterhub-log", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\n")
                with self._lock:
                    self._lines.append(line)
                if not self.running and _READY_RE.search(line):
                    self.running = True
                    self.ready.set()
        except (OSError, ValueError):
            # The pipe was closed under us during teardown.
            pass
        finally:
            self.finished.set()
            self.ready.set()

    def text(self) -> str:
        """Return the output captured so far.

        Returns
        -------
        str
            The captured lines, joined with newlines.
        """
        with self._lock:
            return "\n".join(self._lines)

    def join(self, timeout: float) -> None:
        """Wait for the reader thread to end.

        Parameters
        ----------
        timeout
            Seconds to wait at most.
        """
        self._thread.join(timeout)


def _cookieless_session() -> requests.Session:
    """Make an HTTP session that sends only what each call says.

    Token-authenticated answers may set login cookies; kept, they would
    authenticate later calls on their own.
    """
    session = requests.Session()
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return session


def _write_json(path: Path, value: object) -> None:
    """Write a JSON file atomically, so that its reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    os.replace(partial, path)


def _read_json(path: Path) -> Any:
    """Read a JSON file, or return None if it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


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
    _log: _LogReader | None = field(default=None, repr=False)
    _http: requests.Session = field(default_factory=_cookieless_session, repr=False)

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
        forms = _read_json(self.state_dir / "forms.json") or {}
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
        behaviour = _read_json(path) or {}
        behaviour[user] = {"fail": fail, "delay": delay}
        _write_json(path, behaviour)

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
        survivors = _wait_gone(leftovers, max(deadline - time.monotonic(), 0.0))
        if survivors:
            _wait_gone(survivors, 5, send=signal.SIGKILL)
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


def _write_kernelspec(path_dir: Path) -> None:
    """Write the ``lsst`` kernelspec under a directory on ``JUPYTER_PATH``."""
    spec_dir = path_dir / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "LSST",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))


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
            _MARKER_VARIABLE: marker,
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

# The hub side of the test bed lives in the same module as the test side;
# load it from its file, without putting the tests on the hub's sys.path.
_spec = importlib.util.spec_from_file_location("_nublado_hub_testbed", {module!r})
_testbed = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _testbed
_spec.loader.exec_module(_testbed)
_testbed.configure_hub(c, {settings!r})
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
    process: subprocess.Popen[bytes] | None = None
    reader: _LogReader | None = None
    hub: TestHub | None = None
    try:
        for name in ("config", "data", "runtime", "ipython", "path"):
            (tmp / "jupyter" / name).mkdir(parents=True)
        (tmp / "home").mkdir()
        _write_kernelspec(tmp / "jupyter" / "path")
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
        _write_json(tmp / "settings.json", settings)
        (tmp / "jupyterhub_config.py").write_text(
            _CONFIG_TEMPLATE.format(
                module=str(Path(__file__).resolve()), settings=str(tmp / "settings.json")
            )
        )
        started = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", "jupyterhub", "-f", str(tmp / "jupyterhub_config.py")],
            cwd=tmp,
            env=_hub_environment(tmp, marker, secrets.token_hex(24)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # Its own session: one killpg reaches the hub and its helpers.
            start_new_session=True,
        )
        assert process.stdout is not None
        reader = _LogReader(process.stdout)
        reader.ready.wait(START_TIMEOUT)
        if not reader.running:
            why = "exited" if reader.finished.is_set() else "did not start"
            raise RuntimeError(
                f"JupyterHub {why} within {START_TIMEOUT:.0f} s (exit status"
                f" {process.poll()}); its output:\n{reader.text()}"
            )
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
        )
        yield hub
    finally:
        if hub is not None:
            hub._http.close()
        if process is not None:
            _stop(process, marker)
            if reader is not None:
                # The reader sees end of file once every process holding the
                # pipe has exited; only then may the pipe be closed.
                reader.join(5)
            if process.stdout is not None and (reader is None or reader.finished.is_set()):
                process.stdout.close()
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
        if environ.get(_MARKER_VARIABLE) != marker:
            continue
        if users is not None and environ.get(_USER_VARIABLE) not in users:
            continue
        if _is_alive(proc):
            found.append(proc)
    return found


def _is_alive(proc: psutil.Process) -> bool:
    """Tell whether a process is running (zombies are dead)."""
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _wait_gone(
    procs: Sequence[psutil.Process], timeout: float, *, send: signal.Signals | None = None
) -> list[psutil.Process]:
    """Wait for processes to exit, optionally signalling them first.

    Parameters
    ----------
    procs
        The processes.
    timeout
        Seconds to wait for them at most.
    send
        A signal to send them first.

    Returns
    -------
    list of psutil.Process
        Those still running after the timeout.
    """
    pidfds: dict[int, psutil.Process] = {}
    try:
        for proc in procs:
            pidfd = None
            try:
                # Orphans are not our children and cannot be waited for,
                # and PID 1 on some machines never reaps them, so they stay
                # zombies. A pidfd becomes readable when its process exits,
                # zombie or not; opened before the liveness check, it pins
                # the process that the check saw.
                pidfd = os.pidfd_open(proc.pid)
                if not _is_alive(proc):
                    continue
                if send is not None:
                    proc.send_signal(send)
                pidfds[pidfd] = proc
                pidfd = None
            except (psutil.Error, OSError):
                pass  # Gone already.
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        deadline = time.monotonic() + timeout
        pending = list(pidfds)
        while pending and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(pending, [], [], left)
            pending = [fd for fd in pending if fd not in ready]
        return [pidfds[fd] for fd in pending]
    finally:
        for fd in pidfds:
            os.close(fd)


def _stop(process: subprocess.Popen[bytes], marker: str) -> None:
    """Stop the hub and everything it started."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            # SIGTERM lets the hub stop the labs and the proxy itself.
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    # Whatever is left, each in a session of its own: kernels (a lab that
    # the hub stops with SIGINT leaves them behind), labs and a proxy that
    # the hub could not stop.
    survivors = _wait_gone(_marked(marker), STOP_TIMEOUT, send=signal.SIGTERM)
    if survivors:
        _wait_gone(survivors, 5, send=signal.SIGKILL)


# --------------------------------------------------------------------------
# Hub-process side: loaded by the generated jupyterhub_config.py
# --------------------------------------------------------------------------


def _nublado_options_from_form(form_data: dict[str, list[str]]) -> dict[str, list[str]]:
    """Turn the submitted spawn form into ``user_options``.

    Like Nublado's spawner, this passes the form through (a dict of lists of
    strings; Nublado's lab controller unpacks them), without the XSRF field
    that the hub hands over with the rest.
    """
    return {key: values for key, values in form_data.items() if key != "_xsrf"}


def _accept_user_options(spawner: object, user_options: dict[str, Any]) -> None:
    """Accept ``user_options`` as they are.

    Nublado's spawner hands them to its lab controller, which validates
    them; here the spawner only records them. Without a hook the hub warns
    about "unhandled user_options" at every spawn.
    """


def _hub_plugins(settings: dict[str, Any]) -> tuple[type, type]:
    """Build the authenticator and spawner classes (inside the hub only).

    JupyterHub is imported here rather than at the top of the module so that
    the test process, which imports this module too, does not pay for it.

    Parameters
    ----------
    settings
        The test bed settings of this hub.

    Returns
    -------
    tuple of type
        The authenticator class and the spawner class.
    """
    import asyncio

    from jupyterhub.auth import Authenticator
    from jupyterhub.handlers.base import BaseHandler
    from jupyterhub.spawner import SimpleLocalProcessSpawner
    from jupyterhub.utils import url_path_join
    from tornado import web

    token_users: dict[str, str] = settings["tokens"]
    state_dir = Path(settings["state_dir"])
    forms_path = state_dir / "forms.json"
    behaviour_path = state_dir / "behaviour.json"
    jupyter_dir = state_dir / "jupyter"

    class BearerLoginHandler(BaseHandler):  # type: ignore[misc]
        """Log in the user whose token is in the ``Authorization`` header.

        This stands for the Rubin ingress (which validates the token) plus
        the Nublado authenticator (which logs its user in).
        """

        async def get(self) -> None:
            scheme, _, token = self.request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                self.set_header("WWW-Authenticate", 'Bearer realm="testbed"')
                raise web.HTTPError(401, "Authorization: Bearer <token> required")
            user = await self.login_user({"token": token.strip()})
            if user is None:
                raise web.HTTPError(403, "Unknown token")
            self.redirect(self.get_next_url(user))

    class TestbedAuthenticator(Authenticator):  # type: ignore[misc]
        """Authenticator mapping bearer tokens to users, with auto-login."""

        login_service = "Bearer token"

        def login_url(self, base_url: str) -> str:
            return str(url_path_join(base_url, "bearer/login"))

        def get_handlers(self, app: object) -> list[tuple[str, type]]:
            return [("/bearer/login", BearerLoginHandler)]

        async def authenticate(self, handler: object, data: dict[str, str]) -> str | None:
            return token_users.get(data.get("token", ""))

    class TestbedSpawner(SimpleLocalProcessSpawner):  # type: ignore[misc]
        """Local lab spawner with Nublado's form, progress and test controls."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._events: list[dict[str, Any]] = []
            self._changed = asyncio.Event()

        def _note(self, progress: int, message: str) -> None:
            """Add a progress event and wake the progress streams."""
            self._events.append({"progress": progress, "message": message})
            changed, self._changed = self._changed, asyncio.Event()
            changed.set()

        async def progress(self) -> Any:
            """Yield the progress events of the current spawn.

            Each stream replays the events it missed, then waits for more;
            the hub ends it when the spawn is over.
            """
            events, index = self._events, 0
            while True:
                changed = self._changed
                while index < len(events):
                    yield events[index]
                    index += 1
                if events is not self._events:
                    # The list was replaced (a spawn started or ended) since
                    # this stream began, and the old one is drained.
                    events, index = self._events, 0
                    continue
                await changed.wait()

        def get_env(self) -> dict[str, str]:
            env: dict[str, str] = super().get_env()
            env.update(
                {
                    _MARKER_VARIABLE: settings["marker"],
                    _USER_VARIABLE: self.user.name,
                    # Isolated from the user's own Jupyter setup; the
                    # kernelspec is on JUPYTER_PATH. The sys-prefix
                    # configuration stays, as in a lab image.
                    "JUPYTER_CONFIG_DIR": str(jupyter_dir / "config"),
                    "JUPYTER_DATA_DIR": str(jupyter_dir / "data"),
                    "JUPYTER_RUNTIME_DIR": str(jupyter_dir / "runtime" / self.user.name),
                    "JUPYTER_PATH": str(jupyter_dir / "path"),
                    "IPYTHONDIR": str(jupyter_dir / "ipython"),
                    "PYTHONUNBUFFERED": "1",
                    # Where the Rubin execution extension module is.
                    "PYTHONPATH": settings["pylib"],
                }
            )
            return env

        async def start(self) -> Any:
            # The events of a spawn live from its start until the server
            # stops or the spawn fails, so that a stream opened before
            # start() (the hub has awaits of its own before calling it) never
            # sees those of an earlier spawn.
            self._events = []
            try:
                return await self._start()
            except BaseException:
                self._events = []
                raise

        async def stop(self, now: bool = False) -> None:
            self._events = []
            await super().stop(now=now)

        async def _start(self) -> tuple[str, int]:
            user = self.user.name
            forms = _read_json(forms_path) or {}
            forms.setdefault(user, []).append(self.user_options)
            _write_json(forms_path, forms)
            behaviour = (_read_json(behaviour_path) or {}).get(user, {})
            self._note(10, f"Testbed: lab for {user} requested")
            delay = float(behaviour.get("delay", 0.0))
            if delay > 0:
                deadline = time.monotonic() + delay
                while (left := deadline - time.monotonic()) > 0:
                    self._note(20, f"Testbed: slow spawn, {left:.0f} s to go")
                    await asyncio.sleep(min(1.0, left))
            if behaviour.get("fail"):
                self._note(30, "Testbed: failing as asked")
                raise RuntimeError(f"Testbed spawn failure for {user} (requested by the test)")
            self._note(50, "Testbed: starting the lab process")
            ip, port = await super().start()
            self._note(70, "Testbed: waiting for the lab to listen")
            await self._wait_listening(ip, port)
            self._note(90, "Testbed: the lab listens")
            return ip, port

        async def _wait_listening(self, ip: str, port: int) -> None:
            """Return once the lab accepts connections.

            The hub checks a new lab with an exponential backoff (0.2 s,
            then about 0.4, 0.8, 1.6 s…), which adds a second or two to a
            two-second lab start; it checks once at once, though, so a lab
            that already listens costs nothing. Polling the port here is
            cheap, and Nublado's spawner also returns only once the lab's
            pod runs. The hub's ``start_timeout`` bounds the wait.
            """
            while True:
                status = self.proc.poll()
                if status is not None:
                    raise RuntimeError(f"the lab exited with status {status} before listening")
                try:
                    _, writer = await asyncio.open_connection(ip, port)
                except OSError:
                    await asyncio.sleep(0.05)
                else:
                    writer.close()
                    await writer.wait_closed()
                    return

    return TestbedAuthenticator, TestbedSpawner


def configure_hub(c: Any, settings_path: str) -> None:
    """Configure a test hub (called by its generated ``jupyterhub_config.py``).

    Parameters
    ----------
    c
        The hub's traitlets configuration object.
    settings_path
        The JSON file with the test bed settings of this hub.
    """
    settings = json.loads(Path(settings_path).read_text())
    state_dir = Path(settings["state_dir"])
    authenticator, spawner = _hub_plugins(settings)

    c.JupyterHub.bind_url = f"http://127.0.0.1:{settings['public_port']}"
    c.JupyterHub.hub_bind_url = f"http://127.0.0.1:{settings['hub_port']}"
    c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['api_port']}"
    c.ConfigurableHTTPProxy.command = [settings["chp"]]
    c.ConfigurableHTTPProxy.pid_file = str(state_dir / "proxy.pid")
    if settings["subdomain_host"]:
        c.JupyterHub.subdomain_host = settings["subdomain_host"]
    c.JupyterHub.db_url = f"sqlite:///{state_dir / 'jupyterhub.sqlite'}"
    c.JupyterHub.cookie_secret_file = str(state_dir / "jupyterhub_cookie_secret")
    c.JupyterHub.pid_file = str(state_dir / "jupyterhub.pid")

    c.JupyterHub.authenticator_class = authenticator
    c.Authenticator.auto_login = True
    # Only known tokens log in, so whoever logs in is allowed.
    c.Authenticator.allow_all = True

    # The tokens are random and long: they need no slow salted hashing (16384
    # rounds per check otherwise).
    c.JupyterHub.trust_user_provided_tokens = True
    if settings["api_token_login"]:
        # Pending deprecation in favour of services, but still how a token
        # chosen in advance becomes a user's API token (with the user's own
        # permissions); it also creates the users at start.
        c.JupyterHub.api_tokens = dict(settings["tokens"])
        # Users that api_tokens creates get no role, so their tokens
        # ("inherit") would have no permission at all; allowed users get the
        # default "user" role at start.
        c.Authenticator.allowed_users = set(settings["tokens"].values())
    c.JupyterHub.services = [{"name": ADMIN_SERVICE, "api_token": settings["admin_token"]}]
    c.JupyterHub.load_roles = [
        {
            "name": ADMIN_SERVICE,
            "description": "Test bed queries: read and stop servers, use labs",
            "scopes": ["admin:users", "admin:servers", "access:servers"],
            "services": [ADMIN_SERVICE],
        }
    ]

    c.JupyterHub.spawner_class = spawner
    c.Spawner.cmd = [settings["python"], "-m", "jupyterhub.singleuser"]
    c.Spawner.args = settings["lab_args"]
    c.Spawner.options_form = _OPTIONS_FORM
    c.Spawner.options_from_form = _nublado_options_from_form
    c.Spawner.apply_user_options = _accept_user_options
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
    c.SimpleLocalProcessSpawner.home_dir_template = str(state_dir / "home" / "{username}")
