"""MockJupyter: a fake JupyterHub and JupyterLab on 127.0.0.1.

The fake speaks real HTTP and a real kernel WebSocket, so a client runs its
whole code path against it: the hub login with its redirects and cookies,
the XSRF checks, the spawn form and the server-sent progress stream, the
lab's OAuth round trip, the REST API and the ``v1.kernel.websocket.jupyter.org``
framing. See ``nublado-flow.md`` for the real services it imitates.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from enum import Enum
from types import TracebackType
from typing import (
    Any,
    Dict,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Set,
    Tuple,
    Type,
    Union,
)
from urllib.parse import parse_qsl, urlencode

from .._client import NubladoClient
from .._exceptions import NubladoProtocolError
from .._messages import KernelMessage
from .._models import NotebookExecutionError, NotebookExecutionResult
from .._wire import V1_SUBPROTOCOL, decode_legacy, decode_v1, encode_legacy, encode_v1
from ._kernel import MockKernel, RegisteredResult, run_captured
from ._resolve import loopback_hosts
from ._server import MockHTTPServer, Request, Response
from ._websocket import (
    CLOSE_GOING_AWAY,
    CLOSE_INVALID_DATA,
    CLOSE_UNSUPPORTED_DATA,
    OP_BINARY,
    OP_TEXT,
    ServerWebSocket,
    WebSocketClosedError,
)

__all__ = [
    "MockJupyter",
    "MockJupyterAction",
    "MockJupyterExecutionParameters",
    "MockJupyterLabSession",
    "MockJupyterState",
]

Delay = Union[datetime.timedelta, float, None]

_HUB_COOKIE = "jupyterhub-hub-login"
_SESSION_COOKIE = "jupyterhub-session-id"
# How often the progress stream says something while a spawn is delayed.
_PROGRESS_INTERVAL = 1.0


class MockJupyterAction(Enum):
    """Steps of the flow that `MockJupyter.fail_on` can make fail.

    A failing step answers HTTP 500, except ``PROGRESS``, whose event
    stream reports a failed spawn instead.
    """

    CREATE_SESSION = "create_session"
    """``POST user/<u>/api/sessions``."""
    DELETE_KERNEL = "delete_kernel"
    """``DELETE user/<u>/api/kernels/<id>`` (this package's fallback when
    deleting a session fails)."""
    DELETE_LAB = "delete_lab"
    """``DELETE hub/api/users/<u>/server``."""
    DELETE_SESSION = "delete_session"
    """``DELETE user/<u>/api/sessions/<id>``."""
    LAB = "lab"
    """``GET user/<u>/lab`` (the lab login)."""
    LOGIN = "login"
    """``GET hub/home`` and ``hub/login`` (the hub login)."""
    PROGRESS = "progress"
    """The spawn progress stream, which then ends with a failed event (the
    spawn is abandoned)."""
    RUN_NOTEBOOK = "run_notebook"
    """``POST user/<u>/rubin/execution``."""
    SPAWN = "spawn"
    """``POST hub/spawn``."""
    SPAWN_PENDING = "spawn_pending"
    """``GET hub/spawn-pending/<u>`` (a page this package's client never
    loads)."""
    USER = "user"
    """``GET hub/api/users/<u>`` (the hub's record of the user)."""


class MockJupyterState(Enum):
    """Where a user is in the flow."""

    LOGGED_OUT = "logged out"
    """Never logged in to the hub."""
    LOGGED_IN = "logged in"
    """Logged in; no lab (never spawned, stopped, or failed to spawn)."""
    SPAWN_PENDING = "spawn pending"
    """The spawn form was accepted; the lab is not ready yet."""
    LAB_RUNNING = "lab running"
    """The lab is ready (and may be stopping, with a delete delay)."""


@dataclass
class MockJupyterExecutionParameters:
    """What the last notebook execution request asked for.

    Parameters
    ----------
    kernel_name
        Kernel named by the ``kernel_name`` query parameter or, failing
        that, the ``X-Kernel-Name`` header; `None` for the default.
    clear_local_site_packages
        Whether ``clear_local_site_packages=true`` was asked.
    """

    kernel_name: Optional[str] = None
    clear_local_site_packages: bool = False


@dataclass
class MockJupyterLabSession:
    """An open session in a mock lab.

    Parameters
    ----------
    kernel_name
        Kernel the client asked for.
    name
        Session name sent by the client.
    path
        Session path sent by the client.
    type
        Session type sent by the client.
    session_id
        Id of the session.
    kernel_id
        Id of its kernel.
    """

    kernel_name: str
    name: str
    path: str
    type: str
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    kernel_id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass
class _Login:
    user: str
    xsrf: str


@dataclass
class _OpenSession:
    info: MockJupyterLabSession
    kernel: MockKernel


@dataclass
class _User:
    name: str
    state: MockJupyterState = MockJupyterState.LOGGED_OUT
    spawn_form: Optional[Dict[str, str]] = None
    spawn_ready_at: Optional[float] = None
    started: Optional[str] = None
    delete_at: Optional[float] = None
    sessions: Dict[str, _OpenSession] = field(default_factory=dict)
    execution_parameters: Optional[MockJupyterExecutionParameters] = None
    fail: Set[MockJupyterAction] = field(default_factory=set)


def _seconds(delay: Delay, name: str) -> Optional[float]:
    if delay is None:
        return None
    seconds = delay.total_seconds() if isinstance(delay, datetime.timedelta) else float(delay)
    if seconds < 0:
        raise ValueError(f"{name} must not be negative")
    return seconds


def _iso_now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).isoformat()


def _event(data: Dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _notebook_key(text: str) -> str:
    # Notebooks are JSON; registered and submitted texts match when they
    # parse to the same thing, whatever their formatting.
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


class _KernelSocket:
    """A kernel's WebSocket connection, encoding messages for its protocol."""

    def __init__(self, ws: ServerWebSocket, *, v1: bool) -> None:
        self.ws = ws
        self.v1 = v1

    def send_message(self, msg: KernelMessage) -> None:
        try:
            if self.v1:
                self.ws.send_binary(encode_v1(msg))
            else:
                self.ws.send_text(encode_legacy(msg))
        except WebSocketClosedError:
            pass

    def close(self) -> None:
        self.ws.close()

    def decode(self, opcode: int, data: bytes) -> KernelMessage:
        if self.v1:
            if opcode != OP_BINARY:
                raise ValueError("text frame on a v1 connection")
            return decode_v1(data)
        return decode_legacy(data.decode() if opcode == OP_TEXT else data)


class MockJupyter:
    """A fake Nublado (JupyterHub plus per-user JupyterLabs) on 127.0.0.1.

    It is a real HTTP server in a background thread, so the client under
    test runs its real code path: redirects followed by hand, cookies, the
    hub's and the lab's separate XSRF tokens, the spawn progress event
    stream, the lab's OAuth round trip, and the kernel WebSocket with the
    ``v1.kernel.websocket.jupyter.org`` framing (or the legacy JSON one
    when a client does not offer it). No Jupyter installation is needed.

    Every request must carry ``Authorization: Bearer <token>`` with a token
    of a known user (see ``users`` and `add_user`), as the Rubin ingress
    requires; hub pages also need the hub login cookie, and every
    non-navigation request the XSRF token of the hub or of the lab.

    Use it as a context manager, or call `start` and `stop`::

        with MockJupyter(users={"alice": "token-of-alice"}) as mock:
            client = NubladoClient("alice", "token-of-alice", hub_url=mock.url)

    Each user's lab goes through the states of `MockJupyterState`. A lab
    becomes ready when the client watches the spawn progress, or on any
    later request once the spawn delay (`set_spawn_delay`) has passed.

    Code sent to a kernel answers with the result registered for it by
    `register_python_result`; any other code is executed for real, in a
    namespace of its own per session, so variables persist from one call to
    the next. Output written to ``sys.stdout`` and ``sys.stderr`` by the code
    is sent as it is written, the value of a last expression becomes an
    ``execute_result``, and exceptions are reported with their traceback.

    .. warning::

       Unregistered code is executed with `exec` inside the test process:
       never expose a mock to untrusted clients. ``os._exit`` ends the test
       run, and code that never returns to Python (a long ``time.sleep``)
       cannot be interrupted before it does.

    Parameters
    ----------
    users
        Known users and their tokens.
    use_subdomains
        Serve each lab on its own host, ``<user>.<hub host>``, as a
        JupyterHub with ``subdomain_host`` does. Those names resolve to
        127.0.0.1 inside this process while the mock runs (see
        `loopback_hosts`).
    hub_host
        Host name of the hub in its URL: ``127.0.0.1`` by default, and
        ``nublado.test`` with subdomains (an IP address cannot have
        subdomains).
    base_path
        Path of the hub and labs on their hosts, ``/nb/`` as on Rubin.
    api_tokens
        Treat the tokens as JupyterHub API tokens too: hub API and lab
        requests authenticated by the token need no login cookie and no
        XSRF token (the hub's spawn form still does).

    Raises
    ------
    ValueError
        An invalid argument.

    Notes
    -----
    Clients reach the mock through ``requests`` and ``websocket-client``,
    which honour ``HTTP_PROXY`` and ``NO_PROXY``: where a proxy is
    configured, add ``127.0.0.1`` (and, with subdomains, ``.nublado.test``)
    to ``NO_PROXY``.
    """

    def __init__(
        self,
        users: Optional[Mapping[str, str]] = None,
        *,
        use_subdomains: bool = False,
        hub_host: Optional[str] = None,
        base_path: str = "/nb/",
        api_tokens: bool = False,
    ) -> None:
        host = (hub_host or ("nublado.test" if use_subdomains else "127.0.0.1")).lower()
        if use_subdomains and (host.replace(".", "").isdigit() or ":" in host):
            raise ValueError("Per-user subdomains need a host name, not an IP address")
        self._hub_host = host
        self._use_subdomains = use_subdomains
        self._base = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        self._api_tokens = api_tokens
        self._lock = threading.RLock()
        self._tokens: Dict[str, str] = {}
        self._users: Dict[str, _User] = {}
        self._hub_logins: Dict[str, _Login] = {}
        self._lab_logins: Dict[str, _Login] = {}
        self._oauth_states: Dict[str, Tuple[str, str]] = {}
        self._oauth_codes: Dict[str, Tuple[str, str]] = {}
        self._code_results: Dict[str, RegisteredResult] = {}
        self._notebook_results: Dict[str, NotebookExecutionResult] = {}
        self._sockets: Set[_KernelSocket] = set()
        self._spawn_delay: Optional[float] = None
        self._delete_delay: Optional[float] = None
        self._redirect_loop = False
        self._stopping = threading.Event()
        self._server: Optional[MockHTTPServer] = None
        self._resolver: Optional[contextlib.ExitStack] = None
        for username, token in (users or {}).items():
            self.add_user(username, token)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<MockJupyter {where} users={sorted(self._tokens.values())!r}>"

    # Life cycle

    def start(self) -> MockJupyter:
        """Start serving on a free port of 127.0.0.1.

        Returns
        -------
        MockJupyter
            The mock itself.
        """
        if self._server is not None:
            return self
        self._stopping.clear()
        if self._use_subdomains:
            self._resolver = contextlib.ExitStack()
            self._resolver.enter_context(loopback_hosts(self._hub_host))
        self._server = MockHTTPServer(self, "127.0.0.1", 0)
        self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving: close every WebSocket, stop every kernel, free the port."""
        self._stopping.set()
        with self._lock:
            sockets = list(self._sockets)
            kernels = [s.kernel for u in self._users.values() for s in u.sessions.values()]
        for sock in sockets:
            sock.ws.close(CLOSE_GOING_AWAY, "Server stopping")
        for kernel in kernels:
            kernel.shutdown()
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._resolver is not None:
            self._resolver.close()
            self._resolver = None

    def __enter__(self) -> MockJupyter:
        return self.start()

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.stop()

    # Addresses

    @property
    def port(self) -> int:
        """Port the mock listens on.

        Raises
        ------
        RuntimeError
            The mock is not running.
        """
        if self._server is None:
            raise RuntimeError("The mock is not running; use it as a context manager")
        return self._server.port

    @property
    def hub_host(self) -> str:
        """Host name of the hub."""
        return self._hub_host

    def _origin(self, host: Optional[str] = None) -> str:
        return f"http://{host or self._hub_host}:{self.port}"

    @property
    def url(self) -> str:
        """Base URL of the hub (pass it as ``hub_url``), ending in ``/``.

        Raises
        ------
        RuntimeError
            The mock is not running.
        """
        return self._origin() + self._base

    @property
    def discovery_url(self) -> str:
        """Base URL of a Repertoire discovery service listing this hub.

        Set ``REPERTOIRE_BASE_URL`` to it (the ``mock_jupyter`` fixture
        does) and clients find the hub without a ``hub_url``.

        Raises
        ------
        RuntimeError
            The mock is not running.
        """
        return self._origin() + "/repertoire"

    def lab_url(self, username: str) -> str:
        """Return the base URL of a user's lab, ending in ``/``.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        str
            ``.../user/<name>/``, on the user's own host with subdomains.
        """
        return self._lab_origin(username) + self._base + f"user/{username}/"

    def _lab_origin(self, username: str) -> str:
        if self._use_subdomains:
            return self._origin(f"{username}.{self._hub_host}")
        return self._origin()

    # Users

    @property
    def users(self) -> Dict[str, str]:
        """Known users and their tokens (a copy)."""
        with self._lock:
            return {user: token for token, user in self._tokens.items()}

    def add_user(self, username: str, token: Optional[str] = None) -> str:
        """Add a user, or give an existing one another token.

        Parameters
        ----------
        username
            Name of the user.
        token
            Token for the user; a random one when omitted.

        Returns
        -------
        str
            The token.

        Raises
        ------
        ValueError
            The name is not usable in URLs and host names, or the token
            belongs to another user.
        """
        if not username or not all(c.isalnum() or c in "-_" for c in username):
            raise ValueError(f"Unusable user name {username!r}: letters, digits, - and _ only")
        token = token or f"mock-{secrets.token_hex(16)}"
        with self._lock:
            owner = self._tokens.get(token)
            if owner is not None and owner != username:
                raise ValueError("That token belongs to another user")
            self._tokens[token] = username
            self._users.setdefault(username, _User(username))
        return token

    def token_for(self, username: str) -> str:
        """Return a token of a user, adding the user if needed.

        Parameters
        ----------
        username
            Name of the user.

        Returns
        -------
        str
            A token the mock accepts for that user.
        """
        with self._lock:
            for token, user in self._tokens.items():
                if user == username:
                    return token
        return self.add_user(username)

    def client(self, username: str, **kwargs: Any) -> NubladoClient:
        """Return a `~nublado_sync.NubladoClient` for a user of this mock.

        Parameters
        ----------
        username
            Name of the user; added with a random token when unknown.
        **kwargs
            Further arguments for `~nublado_sync.NubladoClient`.

        Returns
        -------
        NubladoClient
            A client with the user's token and the mock's hub URL.
        """
        kwargs.setdefault("hub_url", self.url)
        return NubladoClient(username, self.token_for(username), **kwargs)

    def _user(self, username: str) -> _User:
        with self._lock:
            return self._users.setdefault(username, _User(username))

    # Configuration

    def fail_on(
        self, username: str, actions: Union[MockJupyterAction, Iterable[MockJupyterAction]]
    ) -> None:
        """Make steps of the flow fail for a user.

        Replaces what was set before for that user; an empty list makes
        nothing fail.

        Parameters
        ----------
        username
            The user.
        actions
            One `MockJupyterAction` or several.
        """
        chosen = {actions} if isinstance(actions, MockJupyterAction) else set(actions)
        with self._lock:
            self._user(username).fail = chosen

    def register_python_result(
        self, code: str, result: Union[str, BaseException], delay: Delay = None
    ) -> None:
        """Register what the kernels answer for a piece of code.

        Parameters
        ----------
        code
            The exact code.
        result
            Standard output to answer with, or an exception, which the
            kernel reports as an error (``NubladoExecutionError`` in the
            client) with its type as ``ename`` and its text as ``evalue``.
        delay
            Time to wait before answering (a `datetime.timedelta` or
            seconds). An interrupt ends the wait with a
            ``KeyboardInterrupt`` error, as a client does after a timeout.
        """
        if not isinstance(result, (str, BaseException)):
            raise TypeError("result must be a str or an exception")
        self._code_results[code] = RegisteredResult(result, _seconds(delay, "delay"))

    def register_notebook_result(
        self, notebook: str, result: Union[NotebookExecutionResult, Mapping[str, Any]]
    ) -> None:
        """Register the answer of the notebook execution extension.

        A notebook without a registered result is answered with itself,
        unchanged and without error.

        Parameters
        ----------
        notebook
            The notebook as ``.ipynb`` text; it matches a submitted notebook
            with the same JSON content, however formatted.
        result
            The answer: a `~nublado_sync.NotebookExecutionResult`, or the
            extension's JSON answer as a mapping (``notebook``,
            ``resources``, ``error``).
        """
        if not isinstance(result, NotebookExecutionResult):
            result = NotebookExecutionResult(
                notebook=str(result["notebook"]),
                resources=dict(result.get("resources") or {}),
                error=_notebook_error(result.get("error")),
            )
        self._notebook_results[_notebook_key(notebook)] = result

    def build_code_result(self, code: str, variables: Dict[str, Any]) -> str:
        """Return what the mock's kernels answer for a piece of code.

        The kernels use the same rules; test suites can call this to see
        what a piece of code would produce. A registered delay is ignored.

        .. warning::

           Code without a registered result is executed with `exec`.

        Parameters
        ----------
        code
            Code to answer for.
        variables
            Namespace to execute unregistered code in; pass the same
            dictionary again to keep variables between calls.

        Returns
        -------
        str
            The registered standard output, or what the executed code
            wrote to standard output.

        Raises
        ------
        BaseException
            The registered exception, or whatever the executed code raised.
        """
        registered = self._code_results.get(code)
        if registered is None:
            return run_captured(code, variables)
        if isinstance(registered.result, BaseException):
            raise registered.result
        return registered.result

    def set_spawn_delay(self, delay: Delay) -> None:
        """Make spawning a lab take time.

        Parameters
        ----------
        delay
            How long after the spawn request the lab is ready (a
            `datetime.timedelta` or seconds); `None` for at once. The
            progress stream sends an event every second meanwhile.
        """
        self._spawn_delay = _seconds(delay, "delay")

    def set_delete_delay(self, delay: Delay) -> None:
        """Make stopping a lab take time.

        Parameters
        ----------
        delay
            How long after the stop request the lab is gone (a
            `datetime.timedelta` or seconds); `None` for at once. Meanwhile
            the hub lists the server as pending ``stop`` and the stop
            request answers 202.
        """
        self._delete_delay = _seconds(delay, "delay")

    def set_redirect_loop(self, *, enabled: bool) -> None:
        """Make the hub home page, the spawn progress and the lab page redirect to themselves.

        Parameters
        ----------
        enabled
            Whether to loop.
        """
        self._redirect_loop = enabled

    def expire_lab_login(self, username: str) -> None:
        """Forget a user's lab logins, as when the lab's OAuth cookie expires.

        The next lab request redirects into the OAuth flow again.

        Parameters
        ----------
        username
            The user.
        """
        with self._lock:
            for cookie in [c for c, login in self._lab_logins.items() if login.user == username]:
                del self._lab_logins[cookie]

    # Inspection

    def get_state(self, username: str) -> MockJupyterState:
        """Return where a user is in the flow.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        MockJupyterState
            The user's state.
        """
        with self._lock:
            user = self._users.get(username)
            return user.state if user else MockJupyterState.LOGGED_OUT

    def get_last_spawn_form(self, username: str) -> Optional[Dict[str, str]]:
        """Return the fields of the last spawn form a user submitted.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        dict of str to str or None
            Each field's (first) value, without the ``_xsrf`` field; `None`
            when the user never submitted the form.
        """
        with self._lock:
            user = self._users.get(username)
            return dict(user.spawn_form) if user and user.spawn_form is not None else None

    def get_session(self, username: str) -> Optional[MockJupyterLabSession]:
        """Return a user's most recently opened session that is still open.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        MockJupyterLabSession or None
            The session, or `None` when the user has none open.
        """
        sessions = self.get_sessions(username)
        return sessions[-1] if sessions else None

    def get_sessions(self, username: str) -> List[MockJupyterLabSession]:
        """Return all of a user's open sessions, oldest first.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        list of MockJupyterLabSession
            The open sessions.
        """
        with self._lock:
            user = self._users.get(username)
            return [s.info for s in user.sessions.values()] if user else []

    def get_namespace(self, username: str, session_id: Optional[str] = None) -> Dict[str, Any]:
        """Return the variables of a session's kernel (the live dictionary).

        Parameters
        ----------
        username
            The user.
        session_id
            The session; the most recent one when omitted.

        Returns
        -------
        dict
            The namespace executed code runs in.

        Raises
        ------
        KeyError
            No such session is open.
        """
        with self._lock:
            sessions = self._user(username).sessions
            if session_id is None:
                if not sessions:
                    raise KeyError(f"{username} has no open session")
                session_id = list(sessions)[-1]
            return sessions[session_id].kernel.namespace

    def get_last_execution_parameters(
        self, username: str
    ) -> Optional[MockJupyterExecutionParameters]:
        """Return the parameters of a user's last notebook execution request.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        MockJupyterExecutionParameters or None
            Kernel name and ``clear_local_site_packages``; `None` when the
            user never ran a notebook.
        """
        with self._lock:
            user = self._users.get(username)
            return user.execution_parameters if user else None

    def get_last_notebook_kernel(self, username: str) -> Optional[str]:
        """Return the kernel a user's last notebook execution asked for.

        Parameters
        ----------
        username
            The user.

        Returns
        -------
        str or None
            The kernel name, or `None` for the default kernel or when the
            user never ran a notebook.
        """
        parameters = self.get_last_execution_parameters(username)
        return parameters.kernel_name if parameters else None

    # Serving

    def handle(self, request: Request) -> Response:
        """Answer one HTTP request (called by the server thread).

        Parameters
        ----------
        request
            The request.

        Returns
        -------
        Response
            The answer.
        """
        path = request.path
        if path == "/repertoire/discovery" and request.method == "GET":
            nublado = {"url": self.url.rstrip("/")}
            return Response.json(200, {"services": {"ui": {"nublado": nublado}}})
        if not path.startswith(self._base):
            return Response.error(404, "Not found")
        rest = path[len(self._base) :]
        lab_host_user: Optional[str] = None
        if self._use_subdomains and request.host != self._hub_host:
            suffix = "." + self._hub_host
            if not request.host.endswith(suffix):
                return Response.error(404, f"Unknown host {request.host}")
            lab_host_user = request.host[: -len(suffix)]
        parts = rest.split("/")
        if parts[0] == "user" and len(parts) >= 2 and parts[1]:
            return self._lab_route(request, parts[1], "/".join(parts[2:]), lab_host_user)
        if lab_host_user is not None:
            return Response.error(404, "Only the user's lab lives on this host")
        if parts[0] == "hub":
            return self._hub_route(request, parts[1:])
        return Response.error(404, "Not found")

    # Authentication helpers

    def _token_user(self, request: Request) -> Optional[str]:
        scheme, _, token = request.header("Authorization").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        with self._lock:
            return self._tokens.get(token.strip())

    def _xsrf_ok(self, request: Request, expected: str) -> bool:
        # JupyterHub's rule: only a GET that is a page load (or a request
        # from a client that sends no Sec-Fetch-Mode) skips the check.
        mode = request.header("Sec-Fetch-Mode")
        if request.method in ("GET", "HEAD") and mode in ("", "navigate"):
            return True
        sent = request.header("X-XSRFToken") or request.query.get("_xsrf", "")
        if not sent and request.body and "x-www-form-urlencoded" in request.header("Content-Type"):
            sent = dict(parse_qsl(request.body.decode(errors="replace"))).get("_xsrf", "")
        return bool(sent) and secrets.compare_digest(sent, expected)

    def _hub_login(self, request: Request, user: str) -> Optional[_Login]:
        with self._lock:
            for cookie in request.cookie(_HUB_COOKIE):
                login = self._hub_logins.get(cookie)
                if login is not None and login.user == user:
                    return login
        return None

    def _lab_login(self, request: Request, user: str) -> Optional[_Login]:
        with self._lock:
            for cookie in request.cookie(f"jupyterhub-user-{user}"):
                login = self._lab_logins.get(cookie)
                if login is not None and login.user == user:
                    return login
        return None

    def _hub_path(self, route: str) -> str:
        return self._base + "hub/" + route

    def _to_login(self, request: Request) -> Response:
        return Response.redirect(self._hub_path("login?") + urlencode({"next": request.target}))

    def _hub_page(self, request: Request) -> Union[Tuple[str, _Login], Response]:
        user = self._token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        login = self._hub_login(request, user)
        if login is None:
            return self._to_login(request)
        return user, login

    def _hub_api(self, request: Request, url_user: str) -> Union[str, Response]:
        user = self._token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        if user != url_user:
            return Response.error(403, f"Action is not authorized for {user}")
        if self._api_tokens:
            return user
        login = self._hub_login(request, user)
        if login is None:
            return Response.error(403, "Not logged in to the hub")
        if not self._xsrf_ok(request, login.xsrf):
            return Response.error(403, "'_xsrf' argument missing or incorrect")
        return user

    def _advance(self, user: _User, *, spawn: bool = True) -> None:
        # Lazy clock-driven transitions, applied when a request looks.
        now = time.monotonic()
        if (
            spawn
            and user.state is MockJupyterState.SPAWN_PENDING
            and user.spawn_ready_at is not None
            and now >= user.spawn_ready_at
            and MockJupyterAction.PROGRESS not in user.fail
        ):
            user.state = MockJupyterState.LAB_RUNNING
        if user.delete_at is not None and now >= user.delete_at:
            self._stop_lab(user)

    def _stop_lab(self, user: _User) -> None:
        sessions = list(user.sessions.values())
        user.sessions.clear()
        for session in sessions:
            session.kernel.shutdown()
        user.state = MockJupyterState.LOGGED_IN
        user.spawn_ready_at = user.delete_at = None
        user.started = None
        self.expire_lab_login(user.name)

    # The hub

    def _hub_route(self, request: Request, parts: List[str]) -> Response:
        method = request.method
        route = "/".join(parts)
        if route == "home" and method == "GET":
            return self._home(request)
        if route == "login" and method == "GET":
            return self._login(request)
        if route == "spawn" and method == "GET":
            return self._spawn_page(request)
        if route == "spawn" and method == "POST":
            return self._spawn(request)
        if len(parts) == 2 and parts[0] == "spawn-pending" and method == "GET":
            return self._spawn_pending(request, parts[1])
        if route == "api/oauth2/authorize" and method == "GET":
            return self._authorize(request)
        if len(parts) >= 3 and parts[:2] == ["api", "users"]:
            url_user, tail = parts[2], "/".join(parts[3:])
            if tail == "" and method == "GET":
                return self._user_model(request, url_user)
            if tail == "server/progress" and method == "GET":
                return self._progress(request, url_user)
            if tail == "server" and method == "DELETE":
                return self._delete_lab(request, url_user)
        if len(parts) >= 2 and parts[0] == "user":
            return self._lab_not_running(request, parts[1])
        return Response.error(404, "Not found")

    def _login(self, request: Request) -> Response:
        user = self._token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        record = self._user(user)
        if MockJupyterAction.LOGIN in record.fail:
            return Response.error(500, "Login failed (fail_on LOGIN)")
        cookie, xsrf = secrets.token_hex(16), secrets.token_hex(16)
        with self._lock:
            self._hub_logins[cookie] = _Login(user, xsrf)
            if record.state is MockJupyterState.LOGGED_OUT:
                record.state = MockJupyterState.LOGGED_IN
        nxt = request.query.get("next", "")
        if not nxt.startswith(self._base):
            nxt = self._hub_path("home")
        hub_path = self._hub_path("")
        return Response.redirect(
            nxt,
            headers=[
                ("Set-Cookie", f"{_HUB_COOKIE}={cookie}; HttpOnly; Path={hub_path}"),
                ("Set-Cookie", f"{_SESSION_COOKIE}={secrets.token_hex(8)}; HttpOnly; Path=/"),
                ("Set-Cookie", f"_xsrf={xsrf}; Path={hub_path}"),
            ],
        )

    def _home(self, request: Request) -> Response:
        user = self._token_user(request)
        if user is not None and MockJupyterAction.LOGIN in self._user(user).fail:
            return Response.error(500, "Login failed (fail_on LOGIN)")
        if self._redirect_loop:
            return Response.redirect(request.target, status=303)
        checked = self._hub_page(request)
        if isinstance(checked, Response):
            return checked
        _, login = checked
        return Response.html(200, f'<html><script>xsrf_token: "{login.xsrf}"</script>Home</html>')

    def _spawn_page(self, request: Request) -> Response:
        checked = self._hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, login = checked
        with self._lock:
            record = self._user(user)
            self._advance(record)
            state = record.state
        if state is MockJupyterState.SPAWN_PENDING:
            return Response.redirect(self._hub_path(f"spawn-pending/{user}"))
        if state is MockJupyterState.LAB_RUNNING:
            return Response.redirect(self.lab_url(user))
        return Response.html(
            200,
            f'<html><script>xsrf_token: "{login.xsrf}"</script><form method="post">'
            '<select name="image_class"></select><select name="size"></select></form></html>',
        )

    def _spawn(self, request: Request) -> Response:
        checked = self._hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, login = checked
        if not self._xsrf_ok(request, login.xsrf):
            return Response.error(403, "'_xsrf' argument missing or incorrect")
        record = self._user(user)
        if MockJupyterAction.SPAWN in record.fail:
            return Response.error(500, "Spawn failed (fail_on SPAWN)")
        form: Dict[str, str] = {}
        for key, value in parse_qsl(request.body.decode(errors="replace"), keep_blank_values=True):
            if key != "_xsrf":
                form.setdefault(key, value)
        with self._lock:
            self._advance(record)
            if record.state in (MockJupyterState.SPAWN_PENDING, MockJupyterState.LAB_RUNNING):
                return Response.error(400, f"{user} is already running or starting")
            record.state = MockJupyterState.SPAWN_PENDING
            record.spawn_form = form
            record.spawn_ready_at = time.monotonic() + (self._spawn_delay or 0.0)
            record.started = _iso_now()
        return Response.redirect(self._hub_path(f"spawn-pending/{user}"))

    def _spawn_pending(self, request: Request, url_user: str) -> Response:
        checked = self._hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, _ = checked
        if user != url_user:
            return Response.error(403, f"Action is not authorized for {user}")
        record = self._user(user)
        if MockJupyterAction.SPAWN_PENDING in record.fail:
            return Response.error(500, "Spawn pending page failed (fail_on SPAWN_PENDING)")
        with self._lock:
            self._advance(record)
            state = record.state
        if state is MockJupyterState.LAB_RUNNING:
            return Response.redirect(self.lab_url(user))
        if state is MockJupyterState.SPAWN_PENDING:
            return Response.html(200, "<html>Your server is starting up.</html>")
        return Response.redirect(self._hub_path("home"))

    def _server_model(self, record: _User) -> Dict[str, Dict[str, Any]]:
        if record.state not in (MockJupyterState.SPAWN_PENDING, MockJupyterState.LAB_RUNNING):
            return {}
        pending: Optional[str] = None
        ready = record.state is MockJupyterState.LAB_RUNNING
        if record.delete_at is not None:
            pending, ready = "stop", False
        elif record.state is MockJupyterState.SPAWN_PENDING:
            pending = "spawn"
        server = {
            "name": "",
            "ready": ready,
            "pending": pending,
            "stopped": False,
            "url": self._base + f"user/{record.name}/",
            "progress_url": self._hub_path(f"api/users/{record.name}/server/progress"),
            "started": record.started,
            "last_activity": _iso_now(),
            "user_options": dict(record.spawn_form or {}),
            "state": {},
        }
        return {"": server}

    def _user_model(self, request: Request, url_user: str) -> Response:
        checked = self._hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = self._user(checked)
        if MockJupyterAction.USER in record.fail:
            return Response.error(500, "User model failed (fail_on USER)")
        with self._lock:
            self._advance(record)
            servers = self._server_model(record)
        return Response.json(
            200, {"kind": "user", "name": record.name, "admin": False, "servers": servers}
        )

    def _progress(self, request: Request, url_user: str) -> Response:
        if self._redirect_loop:
            return Response.redirect(request.target, status=303)
        checked = self._hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = self._user(checked)
        with self._lock:
            # A pending spawn is left for the stream to report in full.
            self._advance(record, spawn=False)
            state = record.state
            stopping = record.delete_at is not None
        if state is MockJupyterState.LAB_RUNNING and not stopping:
            stream: Iterator[bytes] = iter([b"\n\n", self._ready_event(record)])
        elif state is MockJupyterState.SPAWN_PENDING:
            stream = self._progress_events(record)
        elif stopping:
            return Response.error(400, f"{url_user}'s server is stopping")
        else:
            return Response.error(404, f"{url_user} has no such server")
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        return Response(200, headers=headers, stream=stream)

    def _ready_event(self, record: _User) -> bytes:
        url = self._base + f"user/{record.name}/"
        return _event(
            {"progress": 100, "ready": True, "message": f"Server ready at {url}", "url": url}
        )

    def _progress_events(self, record: _User) -> Iterator[bytes]:
        yield b"\n\n"
        yield _event({"progress": 0, "message": "Server requested"})
        yield _event({"progress": 50, "message": "Spawning server..."})
        while True:
            # Never yield while holding the lock: the consumer writes to a
            # client that may be slow.
            with self._lock:
                failed = MockJupyterAction.PROGRESS in record.fail
                if failed:
                    self._stop_lab(record)
                pending = record.state is MockJupyterState.SPAWN_PENDING
                ready_at = record.spawn_ready_at or 0.0
                remaining = ready_at - time.monotonic()
                if pending and remaining <= 0:
                    record.state = MockJupyterState.LAB_RUNNING
            if failed:
                yield _event({"progress": 75, "failed": True, "message": "Spawn failed!"})
                return
            if not pending or remaining <= 0:
                break
            if self._stopping.wait(min(remaining, _PROGRESS_INTERVAL)):
                return
            left = max(ready_at - time.monotonic(), 0.0)
            message = f"Spawning server... ({left:.0f}s left)"
            yield _event({"progress": 75, "message": message})
        with self._lock:
            running = record.state is MockJupyterState.LAB_RUNNING
        if running:
            yield self._ready_event(record)
        else:
            yield _event({"progress": 100, "failed": True, "message": "Spawn cancelled"})

    def _delete_lab(self, request: Request, url_user: str) -> Response:
        checked = self._hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = self._user(checked)
        if MockJupyterAction.DELETE_LAB in record.fail:
            return Response.error(500, "Deleting the lab failed (fail_on DELETE_LAB)")
        with self._lock:
            self._advance(record)
            if record.state not in (MockJupyterState.SPAWN_PENDING, MockJupyterState.LAB_RUNNING):
                return Response(204)
            if self._delete_delay:
                if record.delete_at is None:
                    record.delete_at = time.monotonic() + self._delete_delay
                return Response(202)
            self._stop_lab(record)
        return Response(204)

    def _authorize(self, request: Request) -> Response:
        checked = self._hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, _ = checked
        state = request.query.get("state", "")
        with self._lock:
            pending = self._oauth_states.get(state)
            if pending is None or pending[0] != user:
                return Response.error(400, "Invalid OAuth state")
            code = secrets.token_hex(16)
            self._oauth_codes[code] = (user, state)
        callback = self._lab_origin(user) if self._use_subdomains else ""
        callback += (
            self._base + f"user/{user}/oauth_callback?" + urlencode({"code": code, "state": state})
        )
        return Response.redirect(callback)

    def _lab_not_running(self, request: Request, url_user: str) -> Response:
        user = self._token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        return Response.error(424, f"Server for {url_user} is not running")

    # The lab

    def _lab_route(
        self, request: Request, url_user: str, rest: str, lab_host_user: Optional[str]
    ) -> Response:
        user = self._token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        if user != url_user:
            return Response.error(403, f"{user} may not use {url_user}'s lab")
        if self._use_subdomains and lab_host_user is None:
            return Response.redirect(self._lab_origin(user) + request.target)
        if lab_host_user is not None and lab_host_user != user:
            return Response.error(404, "Wrong lab host")
        record = self._user(user)
        with self._lock:
            self._advance(record)
            running = record.state is MockJupyterState.LAB_RUNNING
        if not running:
            return Response.redirect(self._origin() + self._hub_path(f"user/{user}/{rest}"))
        method = request.method
        if rest in ("", "lab") or rest.startswith("lab/"):
            return self._lab_page(request, user, rest)
        if rest == "oauth_callback" and method == "GET":
            return self._oauth_callback(request, user)
        checked = self._lab_auth(request, user)
        if checked is not None:
            return checked
        parts = rest.split("/")
        if parts[:2] == ["api", "sessions"]:
            return self._sessions_api(request, record, parts[2:])
        if parts[:2] == ["api", "kernels"]:
            return self._kernels_api(request, record, parts[2:])
        if rest == "rubin/execution" and method == "POST":
            return self._run_notebook(request, record)
        return Response.error(404, "Not found")

    def _lab_path(self, user: str) -> str:
        return self._base + f"user/{user}/"

    def _start_oauth(self, user: str, next_target: str) -> Response:
        state = secrets.token_hex(16)
        with self._lock:
            self._oauth_states[state] = (user, next_target)
        callback = (
            (self._lab_origin(user) if self._use_subdomains else "")
            + self._lab_path(user)
            + "oauth_callback"
        )
        query = urlencode(
            {
                "client_id": f"jupyterhub-user-{user}",
                "redirect_uri": callback,
                "response_type": "code",
                "state": state,
            }
        )
        hub = self._origin() if self._use_subdomains else ""
        cookie = (
            f"jupyterhub-user-{user}-oauth-state={state}; HttpOnly; Path={self._lab_path(user)}"
        )
        return Response.redirect(
            hub + self._hub_path("api/oauth2/authorize?") + query, headers=[("Set-Cookie", cookie)]
        )

    def _lab_page(self, request: Request, user: str, rest: str) -> Response:
        record = self._user(user)
        if MockJupyterAction.LAB in record.fail:
            return Response.error(500, "Lab failed (fail_on LAB)")
        if self._redirect_loop:
            return Response.redirect(request.target, status=303)
        if self._lab_login(request, user) is None:
            return self._start_oauth(user, self._lab_path(user) + "lab")
        if rest == "":
            return Response.redirect(self._lab_path(user) + "lab")
        return Response.html(200, "<html>JupyterLab</html>")

    def _oauth_callback(self, request: Request, user: str) -> Response:
        code, state = request.query.get("code", ""), request.query.get("state", "")
        with self._lock:
            granted = self._oauth_codes.pop(code, None)
            pending = self._oauth_states.get(state)
            if granted != (user, state) or pending is None:
                return Response.error(400, "Invalid OAuth callback")
            if state not in request.cookie(f"jupyterhub-user-{user}-oauth-state"):
                return Response.error(400, "OAuth state cookie missing or wrong")
            del self._oauth_states[state]
            cookie, xsrf = secrets.token_hex(16), secrets.token_hex(16)
            self._lab_logins[cookie] = _Login(user, xsrf)
        path = self._lab_path(user)
        return Response.redirect(
            pending[1],
            headers=[
                ("Set-Cookie", f"jupyterhub-user-{user}={cookie}; HttpOnly; Path={path}"),
                ("Set-Cookie", f"_xsrf={xsrf}; Path={path}"),
                ("Set-Cookie", f"jupyterhub-user-{user}-oauth-state=; Max-Age=0; Path={path}"),
            ],
        )

    def _lab_auth(self, request: Request, user: str) -> Optional[Response]:
        if self._api_tokens:
            return None
        login = self._lab_login(request, user)
        if login is None:
            if request.path.endswith("/channels"):
                # jupyter_server refuses a WebSocket without a login.
                return Response.error(403, "Not logged in to the lab")
            # An expired or missing lab login: into the OAuth flow again.
            return self._start_oauth(user, request.target)
        if not self._xsrf_ok(request, login.xsrf):
            return Response.error(403, "'_xsrf' argument missing or incorrect")
        return None

    @staticmethod
    def _session_model(session: _OpenSession) -> Dict[str, Any]:
        info = session.info
        return {
            "id": info.session_id,
            "path": info.path,
            "name": info.name,
            "type": info.type,
            "kernel": MockJupyter._kernel_model(session.kernel),
            "notebook": {"path": info.path, "name": info.name},
        }

    @staticmethod
    def _kernel_model(kernel: MockKernel) -> Dict[str, Any]:
        return {
            "id": kernel.kernel_id,
            "name": kernel.name,
            "last_activity": _iso_now(),
            "execution_state": kernel.execution_state,
            "connections": kernel.connections,
        }

    def _sessions_api(self, request: Request, record: _User, parts: List[str]) -> Response:
        method = request.method
        if not parts or parts == [""]:
            if method == "GET":
                with self._lock:
                    models = [self._session_model(s) for s in record.sessions.values()]
                return Response.json(200, models)
            if method == "POST":
                return self._create_session(request, record)
            return Response.error(405, "Method not allowed")
        session_id = parts[0]
        with self._lock:
            session = record.sessions.get(session_id)
        if session is None:
            return Response.error(404, f"Session not found: {session_id}")
        if method == "GET":
            return Response.json(200, self._session_model(session))
        if method == "DELETE":
            if MockJupyterAction.DELETE_SESSION in record.fail:
                return Response.error(500, "Deleting the session failed (fail_on DELETE_SESSION)")
            with self._lock:
                record.sessions.pop(session_id, None)
            session.kernel.shutdown()
            return Response(204)
        return Response.error(405, "Method not allowed")

    def _create_session(self, request: Request, record: _User) -> Response:
        if MockJupyterAction.CREATE_SESSION in record.fail:
            return Response.error(500, "Creating the session failed (fail_on CREATE_SESSION)")
        try:
            body = json.loads(request.body or b"null")
            kernel = body.get("kernel") or {}
            path, kind = body["path"], body["type"]
            if (
                not isinstance(kernel, dict)
                or not isinstance(path, str)
                or not isinstance(kind, str)
            ):
                raise TypeError("bad field types")
        except (ValueError, KeyError, TypeError, AttributeError):
            return Response.error(400, "A session needs a JSON body with path, type and kernel")
        info = MockJupyterLabSession(
            kernel_name=str(kernel.get("name") or "python3"),
            name=str(body.get("name") or ""),
            path=path,
            type=kind,
        )
        session = _OpenSession(info, MockKernel(info.kernel_id, info.kernel_name, self._lookup))
        with self._lock:
            record.sessions[info.session_id] = session
        return Response.json(201, self._session_model(session))

    def _lookup(self, code: str) -> Optional[RegisteredResult]:
        return self._code_results.get(code)

    def _kernels_api(self, request: Request, record: _User, parts: List[str]) -> Response:
        method = request.method
        with self._lock:
            kernels = {s.kernel.kernel_id: s for s in record.sessions.values()}
        if not parts or parts == [""]:
            if method == "GET":
                return Response.json(200, [self._kernel_model(s.kernel) for s in kernels.values()])
            return Response.error(405, "Method not allowed")
        session = kernels.get(parts[0])
        if session is None:
            return Response.error(404, f"Kernel does not exist: {parts[0]}")
        tail = "/".join(parts[1:])
        if tail == "" and method == "GET":
            return Response.json(200, self._kernel_model(session.kernel))
        if tail == "" and method == "DELETE":
            if MockJupyterAction.DELETE_KERNEL in record.fail:
                return Response.error(500, "Deleting the kernel failed (fail_on DELETE_KERNEL)")
            with self._lock:
                record.sessions.pop(session.info.session_id, None)
            session.kernel.shutdown()
            return Response(204)
        if tail == "interrupt" and method == "POST":
            session.kernel.interrupt()
            return Response(204)
        if tail == "channels" and method == "GET":
            kernel = session.kernel
            return Response(
                101,
                websocket=lambda ws, protocol: self._serve_kernel(ws, protocol, kernel),
                subprotocols=[V1_SUBPROTOCOL],
            )
        return Response.error(404, "Not found")

    def _serve_kernel(
        self, ws: ServerWebSocket, protocol: Optional[str], kernel: MockKernel
    ) -> None:
        connection = _KernelSocket(ws, v1=protocol == V1_SUBPROTOCOL)
        with self._lock:
            self._sockets.add(connection)
        kernel.attach(connection)
        try:
            while not self._stopping.is_set():
                received = ws.receive()
                if received is None:
                    return
                opcode, data = received
                try:
                    msg = connection.decode(opcode, data)
                except ValueError:
                    ws.close(CLOSE_UNSUPPORTED_DATA, "Expected binary v1 frames")
                    return
                except (NubladoProtocolError, UnicodeDecodeError) as e:
                    ws.close(CLOSE_INVALID_DATA, f"Undecodable message: {e}"[:120])
                    return
                kernel.handle(connection, msg)
        finally:
            kernel.detach(connection)
            with self._lock:
                self._sockets.discard(connection)

    def _run_notebook(self, request: Request, record: _User) -> Response:
        if MockJupyterAction.RUN_NOTEBOOK in record.fail:
            return Response.error(500, "Notebook execution failed (fail_on RUN_NOTEBOOK)")
        kernel = request.query.get("kernel_name") or request.header("X-Kernel-Name") or None
        clear = request.query.get("clear_local_site_packages", "").lower() == "true"
        with self._lock:
            record.execution_parameters = MockJupyterExecutionParameters(kernel, clear)
        text = request.body.decode(errors="replace")
        resources: Dict[str, Any] = {}
        try:
            body = json.loads(text)
        except ValueError:
            return Response.error(400, "The body is not JSON")
        if isinstance(body, dict) and "notebook" in body and "cells" not in body:
            inner = body["notebook"]
            text = inner if isinstance(inner, str) else json.dumps(inner)
            resources = body.get("resources") or {}
        result = self._notebook_results.get(_notebook_key(text))
        if result is None:
            return Response.json(200, {"notebook": text, "resources": resources, "error": None})
        error = result.error
        return Response.json(
            200,
            {
                "notebook": result.notebook,
                "resources": result.resources,
                "error": None
                if error is None
                else {
                    "ename": error.name,
                    "evalue": error.value,
                    "err_msg": error.message,
                    "traceback": error.traceback,
                },
            },
        )


def _notebook_error(value: Any) -> Optional[NotebookExecutionError]:
    if value is None or isinstance(value, NotebookExecutionError):
        return value
    return NotebookExecutionError(
        name=str(value.get("ename", "")),
        value=str(value.get("evalue", "")),
        message=str(value.get("err_msg", "")),
        traceback=str(value.get("traceback", "")),
    )
