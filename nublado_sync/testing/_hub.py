"""The fake hub: login, the spawn form and its progress stream, the user API.

It answers the ``hub/...`` routes as JupyterHub behind Rubin's ingress
does: the token names the user, pages need the hub login cookie, API calls
and the spawn form also the hub's XSRF token. The OAuth authorisation
endpoint the labs use lives with the labs (`_lab`).
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, Dict, Iterator, List, Optional
from urllib.parse import parse_qsl

from ._deployment import HUB_COOKIE, SESSION_COOKIE, Deployment
from ._server import Request, Response
from ._state import Login, MockJupyterAction, MockJupyterState, UserRecord, iso_now

__all__ = ["HubRoutes"]

# How often the progress stream says something while a spawn is delayed.
_PROGRESS_INTERVAL = 1.0


def _event(data: Dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


class HubRoutes:
    """The hub's routes.

    Parameters
    ----------
    deployment
        The state shared with the labs.
    """

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment

    def handle(self, request: Request, parts: List[str]) -> Response:
        """Answer a request for ``hub/<parts>``."""
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

    # Login

    def _login(self, request: Request) -> Response:
        d = self.d
        user = d.token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        record = d.user(user)
        if MockJupyterAction.LOGIN in record.fail:
            return Response.error(500, "Login failed (fail_on LOGIN)")
        cookie, xsrf = secrets.token_hex(16), secrets.token_hex(16)
        with d.lock:
            d.hub_logins[cookie] = Login(user, xsrf)
            if record.state is MockJupyterState.LOGGED_OUT:
                record.state = MockJupyterState.LOGGED_IN
        nxt = request.query.get("next", "")
        if not nxt.startswith(d.base):
            nxt = d.hub_path("home")
        hub_path = d.hub_path("")
        return Response.redirect(
            nxt,
            headers=[
                ("Set-Cookie", f"{HUB_COOKIE}={cookie}; HttpOnly; Path={hub_path}"),
                ("Set-Cookie", f"{SESSION_COOKIE}={secrets.token_hex(8)}; HttpOnly; Path=/"),
                ("Set-Cookie", f"_xsrf={xsrf}; Path={hub_path}"),
            ],
        )

    def _home(self, request: Request) -> Response:
        d = self.d
        user = d.token_user(request)
        if user is not None and MockJupyterAction.LOGIN in d.user(user).fail:
            return Response.error(500, "Login failed (fail_on LOGIN)")
        if d.redirect_loop:
            return Response.redirect(request.target, status=303)
        checked = d.hub_page(request)
        if isinstance(checked, Response):
            return checked
        _, login = checked
        return Response.html(200, f'<html><script>xsrf_token: "{login.xsrf}"</script>Home</html>')

    # Spawning

    def _refuse_spawn_without_login(self, request: Request, answer: Response) -> Response:
        # A real hub logs the token in on the way (a redirect to its login);
        # the async client's kit insists on auth_to_hub() first.
        user = self.d.token_user(request)
        if user is None or answer.status not in (301, 302, 303, 307):
            return answer
        return self.d.order.refuse(
            answer, f"{user} asked to spawn a lab before logging in: call auth_to_hub() first"
        )

    def _spawn_page(self, request: Request) -> Response:
        d = self.d
        checked = d.hub_page(request)
        if isinstance(checked, Response):
            return self._refuse_spawn_without_login(request, checked)
        user, login = checked
        with d.lock:
            record = d.user(user)
            d.advance(record)
            state = record.state
        if state is MockJupyterState.SPAWN_PENDING:
            return Response.redirect(d.hub_path(f"spawn-pending/{user}"))
        if state is MockJupyterState.LAB_RUNNING:
            return Response.redirect(d.lab_url(user))
        return Response.html(
            200,
            f'<html><script>xsrf_token: "{login.xsrf}"</script><form method="post">'
            '<select name="image_class"></select><select name="size"></select></form></html>',
        )

    def _spawn(self, request: Request) -> Response:
        d = self.d
        checked = d.hub_page(request)
        if isinstance(checked, Response):
            return self._refuse_spawn_without_login(request, checked)
        user, login = checked
        if not d.xsrf_ok(request, login.xsrf):
            return Response.error(403, "'_xsrf' argument missing or incorrect")
        record = d.user(user)
        if MockJupyterAction.SPAWN in record.fail:
            with d.lock:
                record.failed_spawn = "Spawn failed: the spawner failed (fail_on SPAWN)"
            return Response.error(500, "Spawn failed (fail_on SPAWN)")
        form: Dict[str, str] = {}
        for key, value in parse_qsl(request.body.decode(errors="replace"), keep_blank_values=True):
            if key != "_xsrf":
                form.setdefault(key, value)
        with d.lock:
            d.advance(record)
            if record.state in (MockJupyterState.SPAWN_PENDING, MockJupyterState.LAB_RUNNING):
                state = "stopping" if record.delete_at is not None else record.state.value
                return d.order.refuse(
                    Response.error(400, f"{user} is already running or starting"),
                    f"{user} asked to spawn a lab while one is {state}: wait for it, or stop "
                    "it and wait until is_lab_stopped() says so",
                )
            record.state = MockJupyterState.SPAWN_PENDING
            record.spawn_form = form
            record.failed_spawn = None
            # The clock starts when someone watches the progress (as in the
            # async client's kit): until then the spawn stays pending.
            record.spawn_ready_at = None
            record.started = iso_now()
        return Response.redirect(d.hub_path(f"spawn-pending/{user}"))

    def _spawn_pending(self, request: Request, url_user: str) -> Response:
        d = self.d
        checked = d.hub_page(request)
        if isinstance(checked, Response):
            return checked
        user, _ = checked
        if user != url_user:
            return Response.error(403, f"Action is not authorized for {user}")
        record = d.user(user)
        if MockJupyterAction.SPAWN_PENDING in record.fail:
            return Response.error(500, "Spawn pending page failed (fail_on SPAWN_PENDING)")
        with d.lock:
            d.advance(record)
            state = record.state
        if state is MockJupyterState.LAB_RUNNING:
            return Response.redirect(d.lab_url(user))
        if state is MockJupyterState.SPAWN_PENDING:
            return Response.html(200, "<html>Your server is starting up.</html>")
        return Response.redirect(d.hub_path("home"))

    # The user API

    def _server_model(self, record: UserRecord) -> Dict[str, Dict[str, Any]]:
        d = self.d
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
            "url": d.lab_path(record.name),
            "progress_url": d.hub_path(f"api/users/{record.name}/server/progress"),
            "started": record.started,
            "last_activity": iso_now(),
            "user_options": dict(record.spawn_form or {}),
            "state": {},
        }
        return {"": server}

    def _user_model(self, request: Request, url_user: str) -> Response:
        d = self.d
        checked = d.hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = d.user(checked)
        if MockJupyterAction.USER in record.fail:
            return Response.error(500, "User model failed (fail_on USER)")
        with d.lock:
            d.advance(record)
            servers = self._server_model(record)
        return Response.json(
            200, {"kind": "user", "name": record.name, "admin": False, "servers": servers}
        )

    def _progress(self, request: Request, url_user: str) -> Response:
        d = self.d
        if d.redirect_loop:
            return Response.redirect(request.target, status=303)
        checked = d.hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = d.user(checked)
        with d.lock:
            # A pending spawn is left for the stream to report in full.
            d.advance(record, spawn=False)
            state = record.state
            stopping = record.delete_at is not None
            failed_spawn = record.failed_spawn
            if state is MockJupyterState.SPAWN_PENDING and record.spawn_ready_at is None:
                # The first look at the progress starts the spawn delay.
                record.spawn_ready_at = time.monotonic() + (d.spawn_delay or 0.0)
        if state is MockJupyterState.LAB_RUNNING and not stopping:
            stream: Iterator[bytes] = iter([b"\n\n", self._ready_event(record)])
        elif state is MockJupyterState.SPAWN_PENDING:
            stream = self._progress_events(record)
        elif stopping:
            return Response.error(400, f"{url_user}'s server is stopping")
        elif failed_spawn is not None:
            # JupyterHub reports a spawn that failed at the form as failed.
            failure = {"progress": 100, "failed": True, "message": failed_spawn}
            stream = iter([b"\n\n", _event(failure)])
        else:
            return d.order.refuse(
                Response.error(404, f"{url_user} has no such server"),
                f"{url_user} watched the spawn progress with no lab spawned: "
                "call spawn_lab() first",
            )
        headers = [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache")]
        return Response(200, headers=headers, stream=stream)

    def _ready_event(self, record: UserRecord) -> bytes:
        url = self.d.lab_path(record.name)
        return _event(
            {"progress": 100, "ready": True, "message": f"Server ready at {url}", "url": url}
        )

    def _progress_events(self, record: UserRecord) -> Iterator[bytes]:
        d = self.d
        yield b"\n\n"
        yield _event({"progress": 0, "message": "Server requested"})
        yield _event({"progress": 50, "message": "Spawning server..."})
        while True:
            # Never yield while holding the lock: the consumer writes to a
            # client that may be slow.
            with d.lock:
                failed = MockJupyterAction.PROGRESS in record.fail
                if failed:
                    d.stop_lab(record)
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
            if d.stopping.wait(min(remaining, _PROGRESS_INTERVAL)):
                return
            left = max(ready_at - time.monotonic(), 0.0)
            message = f"Spawning server... ({left:.0f}s left)"
            yield _event({"progress": 75, "message": message})
        with d.lock:
            running = record.state is MockJupyterState.LAB_RUNNING
        if running:
            yield self._ready_event(record)
        else:
            yield _event({"progress": 100, "failed": True, "message": "Spawn cancelled"})

    # Stopping

    def _delete_lab(self, request: Request, url_user: str) -> Response:
        d = self.d
        checked = d.hub_api(request, url_user)
        if isinstance(checked, Response):
            return checked
        record = d.user(checked)
        if MockJupyterAction.DELETE_LAB in record.fail:
            return Response.error(500, "Deleting the lab failed (fail_on DELETE_LAB)")
        with d.lock:
            d.advance(record)
            if record.state not in (MockJupyterState.SPAWN_PENDING, MockJupyterState.LAB_RUNNING):
                return Response(204)
            if d.delete_delay:
                if record.delete_at is None:
                    record.delete_at = time.monotonic() + d.delete_delay
                return Response(202)
            d.stop_lab(record)
        return Response(204)

    def _lab_not_running(self, request: Request, url_user: str) -> Response:
        # JupyterHub answers here for a lab that is not running.
        user = self.d.token_user(request)
        if user is None:
            return Response.error(403, "Invalid or missing token")
        return Response.error(424, f"Server for {url_user} is not running")
