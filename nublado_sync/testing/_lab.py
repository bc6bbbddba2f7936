"""The fake labs: the lab login through the hub's OAuth, and the lab's routes.

A lab answers ``user/<name>/...`` on the hub's host, or on the user's own
host with per-user subdomains. Its pages need the lab's own login cookie,
which only the OAuth round trip through the hub (``hub/api/oauth2/authorize``,
answered here too) gives; its API also needs the lab's XSRF token. The REST
API of sessions and kernels and the kernel WebSocket are in `_sessions`; the
Rubin notebook execution extension (``rubin/execution``) is here.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Dict, Optional
from urllib.parse import urlencode

from .._models import NotebookExecutionError
from ._deployment import Deployment
from ._server import Request, Response
from ._sessions import SessionRoutes
from ._state import Login, MockJupyterAction, MockJupyterExecutionParameters, MockJupyterState

__all__ = ["LabRoutes", "notebook_error", "notebook_key"]


def notebook_key(text: str) -> str:
    """Return the key a notebook's result is registered under."""
    # Notebooks are JSON; registered and submitted texts match when they
    # parse to the same thing, whatever their formatting.
    try:
        return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return text


def notebook_error(value: Any) -> Optional[NotebookExecutionError]:
    """Read the extension's ``error`` member, or pass an error through."""
    if value is None or isinstance(value, NotebookExecutionError):
        return value
    return NotebookExecutionError(
        name=str(value.get("ename", "")),
        value=str(value.get("evalue", "")),
        message=str(value.get("err_msg", "")),
        traceback=str(value.get("traceback", "")),
    )


class LabRoutes:
    """The labs' routes and the hub's OAuth endpoint.

    Parameters
    ----------
    deployment
        The state shared with the hub.
    """

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment
        self.sessions = SessionRoutes(deployment)

    def handle(
        self, request: Request, url_user: str, rest: str, lab_host_user: Optional[str]
    ) -> Response:
        """Answer ``user/<url_user>/<rest>``, received on a lab host or the hub's."""
        d = self.d
        user = d.token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        if user != url_user:
            return Response.error(403, f"{user} may not use {url_user}'s lab")
        if d.use_subdomains and lab_host_user is None:
            return Response.redirect(d.lab_origin(user) + request.target)
        if lab_host_user is not None and lab_host_user != user:
            return Response.error(404, "Wrong lab host")
        record = d.user(user)
        with d.lock:
            d.advance(record)
            running = record.state is MockJupyterState.LAB_RUNNING
        if not running:
            return Response.redirect(d.origin() + d.hub_path(f"user/{user}/{rest}"))
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
            return self.sessions.sessions_api(request, record, parts[2:])
        if parts[:2] == ["api", "kernels"]:
            return self.sessions.kernels_api(request, record, parts[2:])
        if rest == "rubin/execution" and method == "POST":
            return self._run_notebook(request, user)
        return Response.error(404, "Not found")

    # The login: OAuth through the hub

    def authorize(self, request: Request) -> Response:
        """Answer the hub's ``api/oauth2/authorize``: a code for the lab's callback."""
        d = self.d
        checked = d.hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, _ = checked
        state = request.query.get("state", "")
        with d.lock:
            pending = d.oauth_states.get(state)
            if pending is None or pending[0] != user:
                return Response.error(400, "Invalid OAuth state")
            code = secrets.token_hex(16)
            d.oauth_codes[code] = (user, state)
        callback = d.lab_origin(user) if d.use_subdomains else ""
        callback += d.lab_path(user) + "oauth_callback?" + urlencode({"code": code, "state": state})
        return Response.redirect(callback)

    def _start_oauth(self, user: str, next_target: str) -> Response:
        d = self.d
        state = secrets.token_hex(16)
        with d.lock:
            d.oauth_states[state] = (user, next_target)
        callback = (d.lab_origin(user) if d.use_subdomains else "") + d.lab_path(user)
        callback += "oauth_callback"
        query = urlencode(
            {
                "client_id": f"jupyterhub-user-{user}",
                "redirect_uri": callback,
                "response_type": "code",
                "state": state,
            }
        )
        hub = d.origin() if d.use_subdomains else ""
        cookie = f"jupyterhub-user-{user}-oauth-state={state}; HttpOnly; Path={d.lab_path(user)}"
        return Response.redirect(
            hub + d.hub_path("api/oauth2/authorize?") + query, headers=[("Set-Cookie", cookie)]
        )

    def _lab_page(self, request: Request, user: str, rest: str) -> Response:
        d = self.d
        if MockJupyterAction.LAB in d.user(user).fail:
            return Response.error(500, "Lab failed (fail_on LAB)")
        if d.redirect_loop:
            return Response.redirect(request.target, status=303)
        if d.lab_login(request, user) is None:
            return self._start_oauth(user, d.lab_path(user) + "lab")
        if rest == "":
            return Response.redirect(d.lab_path(user) + "lab")
        return Response.html(200, "<html>JupyterLab</html>")

    def _oauth_callback(self, request: Request, user: str) -> Response:
        d = self.d
        code, state = request.query.get("code", ""), request.query.get("state", "")
        with d.lock:
            granted = d.oauth_codes.pop(code, None)
            pending = d.oauth_states.get(state)
            if granted != (user, state) or pending is None:
                return Response.error(400, "Invalid OAuth callback")
            if state not in request.cookie(f"jupyterhub-user-{user}-oauth-state"):
                return Response.error(400, "OAuth state cookie missing or wrong")
            del d.oauth_states[state]
            cookie, xsrf = secrets.token_hex(16), secrets.token_hex(16)
            d.lab_logins[cookie] = Login(user, xsrf)
        path = d.lab_path(user)
        return Response.redirect(
            pending[1],
            headers=[
                ("Set-Cookie", f"jupyterhub-user-{user}={cookie}; HttpOnly; Path={path}"),
                ("Set-Cookie", f"_xsrf={xsrf}; Path={path}"),
                ("Set-Cookie", f"jupyterhub-user-{user}-oauth-state=; Max-Age=0; Path={path}"),
            ],
        )

    def _lab_auth(self, request: Request, user: str) -> Optional[Response]:
        d = self.d
        if d.api_tokens:
            return None
        login = d.lab_login(request, user)
        if login is None:
            if request.path.endswith("/channels"):
                # jupyter_server refuses a WebSocket without a login.
                return Response.error(403, "Not logged in to the lab")
            # An expired or missing lab login: into the OAuth flow again.
            return self._start_oauth(user, request.target)
        if not d.xsrf_ok(request, login.xsrf):
            return Response.error(403, "'_xsrf' argument missing or incorrect")
        return None

    # The notebook execution extension

    def _run_notebook(self, request: Request, user: str) -> Response:
        d = self.d
        record = d.user(user)
        if MockJupyterAction.RUN_NOTEBOOK in record.fail:
            return Response.error(500, "Notebook execution failed (fail_on RUN_NOTEBOOK)")
        kernel = request.query.get("kernel_name") or request.header("X-Kernel-Name") or None
        clear = request.query.get("clear_local_site_packages", "").lower() == "true"
        with d.lock:
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
        result = d.notebook_results.get(notebook_key(text))
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
