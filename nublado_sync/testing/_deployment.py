"""The state the fake hub, labs and kernels share, and the rules they all apply.

One `Deployment` per `~nublado_sync.testing.MockJupyter`: its addresses,
users and tokens, the hub's and the labs' logins, what a test registered,
and the clock-driven transitions of each user's lab. The rooms (`_hub`,
`_lab`, `_sessions`) answer requests against it; all of them hold its lock
while they read or change it.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import TYPE_CHECKING, Dict, Optional, Set, Tuple, Union
from urllib.parse import parse_qsl, urlencode

from ._kernel import RegisteredResult
from ._order import OrderBook
from ._server import Request, Response
from ._state import Login, MockJupyterAction, MockJupyterState, UserRecord

if TYPE_CHECKING:
    from .._models import NotebookExecutionResult
    from ._sessions import KernelSocket

__all__ = ["HUB_COOKIE", "SESSION_COOKIE", "Deployment", "named_token", "valid_username"]

HUB_COOKIE = "jupyterhub-hub-login"
SESSION_COOKIE = "jupyterhub-session-id"
# Tokens that carry their user's name, as the async client's kit makes them.
_NAMED_TOKEN_PREFIX = "gt-"  # noqa: S105 - a prefix, not a secret


def valid_username(username: str) -> bool:
    """Tell whether a name is usable in URLs and host names."""
    return bool(username) and all(c.isalnum() or c in "-_" for c in username)


def named_token(username: str) -> str:
    """Return a new token naming its user: ``gt-<base64 name>.<random>``."""
    if not valid_username(username):
        raise ValueError(f"Unusable user name {username!r}: letters, digits, - and _ only")
    encoded = base64.urlsafe_b64encode(username.encode()).decode()
    return f"{_NAMED_TOKEN_PREFIX}{encoded}.{secrets.token_hex(8)}"


def _named_user(token: str) -> Optional[str]:
    if not token.startswith(_NAMED_TOKEN_PREFIX) or "." not in token:
        return None
    encoded = token[len(_NAMED_TOKEN_PREFIX) :].split(".", 1)[0]
    try:
        username = base64.urlsafe_b64decode(encoded.encode()).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return username if valid_username(username) else None


class Deployment:
    """Shared state of one fake Nublado.

    Parameters
    ----------
    hub_host
        Host name of the hub.
    use_subdomains
        Whether each lab has its own host.
    base
        Path of the hub and labs, starting and ending with ``/``.
    api_tokens
        Whether tokens also work as JupyterHub API tokens.
    enforce_order
        Record calls out of order (`_order`).
    """

    def __init__(
        self,
        *,
        hub_host: str,
        use_subdomains: bool,
        base: str,
        api_tokens: bool,
        enforce_order: bool = True,
    ) -> None:
        self.hub_host = hub_host
        self.use_subdomains = use_subdomains
        self.base = base
        self.api_tokens = api_tokens
        self.lock = threading.RLock()
        self.port: Optional[int] = None
        self.tokens: Dict[str, str] = {}
        self.users: Dict[str, UserRecord] = {}
        self.hub_logins: Dict[str, Login] = {}
        self.lab_logins: Dict[str, Login] = {}
        self.oauth_states: Dict[str, Tuple[str, str]] = {}
        self.oauth_codes: Dict[str, Tuple[str, str]] = {}
        self.code_results: Dict[str, RegisteredResult] = {}
        self.notebook_results: Dict[str, NotebookExecutionResult] = {}
        # Open kernel WebSockets, closed when the mock stops.
        self.sockets: Set[KernelSocket] = set()
        self.spawn_delay: Optional[float] = None
        self.delete_delay: Optional[float] = None
        self.redirect_loop = False
        self.stopping = threading.Event()
        self.order = OrderBook(enforce=enforce_order)

    # Addresses

    def origin(self, host: Optional[str] = None) -> str:
        """Return ``http://host:port`` of the hub, or of another host."""
        if self.port is None:
            raise RuntimeError("The mock is not running; use it as a context manager")
        return f"http://{host or self.hub_host}:{self.port}"

    def lab_origin(self, username: str) -> str:
        """Return the origin of a user's lab: its own host with subdomains."""
        if self.use_subdomains:
            return self.origin(f"{username}.{self.hub_host}")
        return self.origin()

    def lab_url(self, username: str) -> str:
        """Return the base URL of a user's lab, ending in ``/``."""
        return self.lab_origin(username) + self.lab_path(username)

    def hub_path(self, route: str) -> str:
        """Return the path of a hub route."""
        return self.base + "hub/" + route

    def lab_path(self, username: str) -> str:
        """Return the path of a user's lab, ending in ``/``."""
        return self.base + f"user/{username}/"

    # Users

    def user(self, username: str) -> UserRecord:
        """Return a user's record, created on first use."""
        with self.lock:
            return self.users.setdefault(username, UserRecord(username))

    def failing(self, username: str, action: MockJupyterAction) -> bool:
        """Tell whether a test asked this step to fail for the user."""
        with self.lock:
            return action in self.user(username).fail

    def advance(self, user: UserRecord, *, spawn: bool = True) -> None:
        """Apply the clock-driven transitions due when a request looks.

        Call with the lock held. A pending spawn becomes a running lab once
        its ready time has passed (``spawn``); a stopping lab is gone once
        its delete time has.
        """
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
            self.stop_lab(user)

    def stop_lab(self, user: UserRecord) -> None:
        """Stop a user's lab: its kernels, its sessions and its logins. Lock held."""
        sessions = list(user.sessions.values())
        user.sessions.clear()
        for session in sessions:
            session.kernel.shutdown()
        user.state = MockJupyterState.LOGGED_IN
        user.spawn_ready_at = user.delete_at = None
        user.started = None
        self.expire_lab_login(user.name)

    def expire_lab_login(self, username: str) -> None:
        """Forget a user's lab logins."""
        with self.lock:
            for cookie in [c for c, login in self.lab_logins.items() if login.user == username]:
                del self.lab_logins[cookie]

    def lookup(self, code: str) -> Optional[RegisteredResult]:
        """Return the result registered for a piece of code, if any."""
        return self.code_results.get(code)

    # Authentication

    def token_user(self, request: Request) -> Optional[str]:
        """Return the user whose token authenticates a request."""
        scheme, _, token = request.header("Authorization").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        token = token.strip()
        with self.lock:
            user = self.tokens.get(token)
            if user is None:
                user = _named_user(token)
                if user is not None:
                    self.tokens[token] = user
                    self.user(user)
            return user

    @staticmethod
    def xsrf_ok(request: Request, expected: str) -> bool:
        """Apply JupyterHub's XSRF rule to a request."""
        # Only a GET that is a page load (or a request from a client that
        # sends no Sec-Fetch-Mode) skips the check.
        mode = request.header("Sec-Fetch-Mode")
        if request.method in ("GET", "HEAD") and mode in ("", "navigate"):
            return True
        sent = request.header("X-XSRFToken") or request.query.get("_xsrf", "")
        if not sent and request.body and "x-www-form-urlencoded" in request.header("Content-Type"):
            sent = dict(parse_qsl(request.body.decode(errors="replace"))).get("_xsrf", "")
        return bool(sent) and secrets.compare_digest(sent, expected)

    def hub_login(self, request: Request, user: str) -> Optional[Login]:
        """Return the user's hub login named by the request's cookie."""
        with self.lock:
            for cookie in request.cookie(HUB_COOKIE):
                login = self.hub_logins.get(cookie)
                if login is not None and login.user == user:
                    return login
        return None

    def lab_login(self, request: Request, user: str) -> Optional[Login]:
        """Return the user's lab login named by the request's cookie."""
        with self.lock:
            for cookie in request.cookie(f"jupyterhub-user-{user}"):
                login = self.lab_logins.get(cookie)
                if login is not None and login.user == user:
                    return login
        return None

    def to_login(self, request: Request) -> Response:
        """Redirect to the hub login, coming back to the request's target."""
        return Response.redirect(self.hub_path("login?") + urlencode({"next": request.target}))

    def hub_page(self, request: Request) -> Union[Tuple[str, Login], Response]:
        """Authenticate a hub page: the user and login, or the answer to send."""
        user = self.token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        login = self.hub_login(request, user)
        if login is None:
            return self.to_login(request)
        return user, login

    def hub_api(self, request: Request, url_user: str) -> Union[str, Response]:
        """Authenticate a hub API request: the user, or the answer to send."""
        user = self.token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        if user != url_user:
            return Response.error(403, f"Action is not authorized for {user}")
        if self.api_tokens:
            return user
        login = self.hub_login(request, user)
        call = f"{request.method} {request.path}"
        if login is None:
            return self.order.refuse(
                Response.error(403, "Not logged in to the hub"),
                f"{user} called {call} before logging in to the hub: call auth_to_hub() first",
            )
        if not self.xsrf_ok(request, login.xsrf):
            return self.order.refuse(
                Response.error(403, "'_xsrf' argument missing or incorrect"),
                f"{user} called {call} without the hub's XSRF token that auth_to_hub() sets",
            )
        return user
