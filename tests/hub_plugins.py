"""The hub side of the test bed: a Nublado-like authenticator and spawner.

The generated ``jupyterhub_config.py`` of each test hub loads this file by
its path and calls `configure_hub`, so it imports nothing from the tests
(the hub does not have them on its ``sys.path``). `tests.hub_testbed`, the
test side, shares its names and the JSON files through which the two sides
talk: the settings the test writes and the spawn records the hub writes.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

__all__ = [
    "ADMIN_SERVICE",
    "MARKER_VARIABLE",
    "OPTIONS_FORM",
    "USER_VARIABLE",
    "configure_hub",
    "read_json",
    "write_json",
]

ADMIN_SERVICE = "testbed-admin"
"""Name of the hub service whose token is `TestHub.admin_token`."""

# Every process of a test hub (the hub, the proxy, labs and kernels) inherits
# this variable, whose value is unique per hub: the only reliable way to find
# them all, since the proxy, each lab and each kernel run in a session of
# their own.
MARKER_VARIABLE = "NUBLADO_TESTBED_HUB"

# Every process of a lab (the lab and its kernels) inherits this one, whose
# value is the user's name.
USER_VARIABLE = "NUBLADO_TESTBED_USER"

# The options form of Nublado's spawner, reduced to the fields a client
# submits (the real one offers menus of images built from the registry).
OPTIONS_FORM = """
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


def write_json(path: Path, value: object) -> None:
    """Write a JSON file atomically, so that its reader never sees half of it."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(value, indent=1))
    os.replace(partial, path)


def read_json(path: Path) -> Any:
    """Read a JSON file, or return None if it does not exist."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


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
                    MARKER_VARIABLE: settings["marker"],
                    USER_VARIABLE: self.user.name,
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
            forms = read_json(forms_path) or {}
            forms.setdefault(user, []).append(self.user_options)
            write_json(forms_path, forms)
            behaviour = (read_json(behaviour_path) or {}).get(user, {})
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
    c.Spawner.options_form = OPTIONS_FORM
    c.Spawner.options_from_form = _nublado_options_from_form
    c.Spawner.apply_user_options = _accept_user_options
    c.Spawner.start_timeout = 120
    c.Spawner.http_timeout = 60
    c.SimpleLocalProcessSpawner.home_dir_template = str(state_dir / "home" / "{username}")
