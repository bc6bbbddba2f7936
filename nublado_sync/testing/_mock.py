"""MockJupyter: a fake JupyterHub and JupyterLab on 127.0.0.1.

The fake speaks real HTTP and a real kernel WebSocket, so a client runs its
whole code path against it: the hub login with its redirects and cookies,
the XSRF checks, the spawn form and the server-sent progress stream, the
lab's OAuth round trip, the REST API and the ``v1.kernel.websocket.jupyter.org``
framing. See ``nublado-flow.md`` for the real services it imitates.

This module is the public face and the request router; each part of the
deployment has a room of its own: the hub in `_hub`, the labs and their
OAuth login in `_lab`, sessions, kernels and the kernel WebSocket in
`_sessions`, the state they share in `_deployment`, and the HTTP and
WebSocket server in `_server` and `_websocket`.
"""

from __future__ import annotations

import contextlib
import secrets
from types import TracebackType
from typing import Any, Dict, Iterable, List, Mapping, Optional, Type, Union

from .._client import NubladoClient
from .._models import NotebookExecutionResult
from ._deployment import Deployment, named_token, valid_username
from ._hub import HubRoutes
from ._kernel import RegisteredResult, run_captured
from ._lab import LabRoutes, notebook_error, notebook_key
from ._resolve import loopback_hosts
from ._server import MockHTTPServer, Request, Response
from ._state import (
    Delay,
    MockJupyterAction,
    MockJupyterExecutionParameters,
    MockJupyterLabSession,
    MockJupyterState,
    seconds,
)
from ._websocket import CLOSE_GOING_AWAY

__all__ = ["MockJupyter"]


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

    Each user's lab goes through the states of `MockJupyterState`. A
    spawned lab becomes ready once a client has watched its spawn progress
    and the spawn delay (`set_spawn_delay`), counted from the first progress
    request, has passed.

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
    enforce_order
        Fail calls made out of the order the async client's kit insists on
        with `AssertionError` (see `check_order`); when `False` they get
        only the HTTP answer a real hub gives.

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
        enforce_order: bool = True,
    ) -> None:
        host = (hub_host or ("nublado.test" if use_subdomains else "127.0.0.1")).lower()
        if use_subdomains and (host.replace(".", "").isdigit() or ":" in host):
            raise ValueError("Per-user subdomains need a host name, not an IP address")
        base = "/" + base_path.strip("/") + "/" if base_path.strip("/") else "/"
        self._d = Deployment(
            hub_host=host,
            use_subdomains=use_subdomains,
            base=base,
            api_tokens=api_tokens,
            enforce_order=enforce_order,
        )
        self._hub = HubRoutes(self._d)
        self._lab = LabRoutes(self._d)
        self._server: Optional[MockHTTPServer] = None
        self._resolver: Optional[contextlib.ExitStack] = None
        for username, token in (users or {}).items():
            self.add_user(username, token)

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<MockJupyter {where} users={sorted(self._d.tokens.values())!r}>"

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
        self._d.stopping.clear()
        if self._d.use_subdomains:
            self._resolver = contextlib.ExitStack()
            self._resolver.enter_context(loopback_hosts(self._d.hub_host))
        self._server = MockHTTPServer(self, "127.0.0.1", 0)
        self._server.start()
        self._d.port = self._server.port
        self._d.order.open()
        return self

    def stop(self) -> None:
        """Stop serving: close every WebSocket, stop every kernel, free the port."""
        self._d.stopping.set()
        with self._d.lock:
            sockets = list(self._d.sockets)
            kernels = [s.kernel for u in self._d.users.values() for s in u.sessions.values()]
        for sock in sockets:
            sock.ws.close(CLOSE_GOING_AWAY, "Server stopping")
        for kernel in kernels:
            kernel.shutdown()
        if self._server is not None:
            self._server.stop()
            self._server = None
            self._d.port = None
        self._d.order.close()
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
        return self._d.hub_host

    @property
    def url(self) -> str:
        """Base URL of the hub (pass it as ``hub_url``), ending in ``/``.

        Raises
        ------
        RuntimeError
            The mock is not running.
        """
        return self._d.origin() + self._d.base

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
        return self._d.origin() + "/repertoire"

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
        return self._d.lab_url(username)

    # Users

    @property
    def users(self) -> Dict[str, str]:
        """Known users and their tokens (a copy)."""
        with self._d.lock:
            return {user: token for token, user in self._d.tokens.items()}

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
        if not valid_username(username):
            raise ValueError(f"Unusable user name {username!r}: letters, digits, - and _ only")
        token = token or f"mock-{secrets.token_hex(16)}"
        with self._d.lock:
            owner = self._d.tokens.get(token)
            if owner is not None and owner != username:
                raise ValueError("That token belongs to another user")
            self._d.tokens[token] = username
            self._d.user(username)
        return token

    @staticmethod
    def create_mock_token(username: str) -> str:
        """Return a new token that names its user, as the async client's kit makes them.

        Every mock accepts such a token for that user (``gt-`` followed by
        the name in URL-safe base64, a dot and random text) and adds the
        user on first use, so a token can be made before any mock exists.
        `token_for` gives a token of one mock.

        Parameters
        ----------
        username
            Name of the user.

        Returns
        -------
        str
            The token.
        """
        return named_token(username)

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
        with self._d.lock:
            for token, user in self._d.tokens.items():
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
        with self._d.lock:
            self._d.user(username).fail = chosen

    def fail(self, username: str, action: MockJupyterAction) -> None:
        """Make one more step of the flow fail for a user.

        The name of older versions of the async client's kit: unlike
        `fail_on`, it adds to what was set before.

        Parameters
        ----------
        username
            The user.
        action
            The step.
        """
        with self._d.lock:
            self._d.user(username).fail.add(action)

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
        self._d.code_results[code] = RegisteredResult(result, seconds(delay, "delay"))

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
                error=notebook_error(result.get("error")),
            )
        self._d.notebook_results[notebook_key(notebook)] = result

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
        registered = self._d.code_results.get(code)
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
            How long the lab takes to be ready (a `datetime.timedelta` or
            seconds), counted from the first request for the spawn's
            progress, as in the async client's kit; `None` for at once. The
            progress stream sends an event every second meanwhile.

        Notes
        -----
        A spawned lab is ready only once its progress has been watched
        (`~nublado_sync.NubladoClient.wait_for_spawn` or
        `~nublado_sync.NubladoClient.watch_spawn_progress`) and the delay has
        passed since the first such request; until then the hub lists it as
        pending, whatever the delay. A test that times
        `~nublado_sync.NubladoClient.wait_for_spawn` therefore measures at
        least the delay.
        """
        self._d.spawn_delay = seconds(delay, "delay")

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
        self._d.delete_delay = seconds(delay, "delay")

    def set_redirect_loop(self, *, enabled: bool) -> None:
        """Make the hub home page, the spawn progress and the lab page redirect to themselves.

        Parameters
        ----------
        enabled
            Whether to loop.
        """
        self._d.redirect_loop = enabled

    def expire_lab_login(self, username: str) -> None:
        """Forget a user's lab logins, as when the lab's OAuth cookie expires.

        The next lab request redirects into the OAuth flow again.

        Parameters
        ----------
        username
            The user.
        """
        self._d.expire_lab_login(username)

    # Inspection

    def check_order(self) -> None:
        """Fail for calls made out of order that no client turned into an error.

        The fake hub refuses what the async client's kit refuses with an
        ``assert``: a spawn, or a hub API call, before `auth_to_hub
        <nublado_sync.NubladoClient.auth_to_hub>`; watching the spawn
        progress with no lab spawned; a second spawn while a lab is pending,
        running or stopping. The client of this package raises
        `AssertionError` from such a call in the calling thread. A client in
        another process, or code that sends its own requests, sees only the
        HTTP answer a real hub gives (a redirect to the login, 400, 403 or
        404); this method reports those. The ``mock_jupyter`` fixture and
        `register_mock_jupyter` call it when the test ends.

        Raises
        ------
        AssertionError
            Some call was out of order and no client raised it; each is
            reported once.
        """
        self._d.order.check()

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
        with self._d.lock:
            user = self._d.users.get(username)
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
        with self._d.lock:
            user = self._d.users.get(username)
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
        with self._d.lock:
            user = self._d.users.get(username)
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
        with self._d.lock:
            sessions = self._d.user(username).sessions
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
        with self._d.lock:
            user = self._d.users.get(username)
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
        d = self._d
        path = request.path
        if path == "/repertoire/discovery" and request.method == "GET":
            nublado = {"url": self.url.rstrip("/")}
            return Response.json(200, {"services": {"ui": {"nublado": nublado}}})
        if not path.startswith(d.base):
            return Response.error(404, "Not found")
        rest = path[len(d.base) :]
        lab_host_user: Optional[str] = None
        if d.use_subdomains and request.host != d.hub_host:
            suffix = "." + d.hub_host
            if not request.host.endswith(suffix):
                return Response.error(404, f"Unknown host {request.host}")
            lab_host_user = request.host[: -len(suffix)]
        parts = rest.split("/")
        if parts[0] == "user" and len(parts) >= 2 and parts[1]:
            return self._lab.handle(request, parts[1], "/".join(parts[2:]), lab_host_user)
        if lab_host_user is not None:
            return Response.error(404, "Only the user's lab lives on this host")
        if rest == "hub/api/oauth2/authorize" and request.method == "GET":
            # The hub's side of the labs' OAuth login.
            return self._lab.authorize(request)
        if parts[0] == "hub":
            return self._hub.handle(request, parts[1:])
        return Response.error(404, "Not found")
