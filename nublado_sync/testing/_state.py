"""What the fake Nublado knows: its public value types and per-user records."""

from __future__ import annotations

import datetime
import uuid
from dataclasses import dataclass, field
from enum import Enum
from typing import Dict, Optional, Set, Union

from ._kernel import MockKernel

__all__ = [
    "Delay",
    "Login",
    "MockJupyterAction",
    "MockJupyterExecutionParameters",
    "MockJupyterLabSession",
    "MockJupyterState",
    "OpenSession",
    "UserRecord",
    "iso_now",
    "seconds",
]

Delay = Union[datetime.timedelta, float, None]


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
class Login:
    """A login to the hub or to a lab, found by its cookie."""

    user: str
    xsrf: str


@dataclass
class OpenSession:
    """A session of a lab and the kernel behind it."""

    info: MockJupyterLabSession
    kernel: MockKernel


@dataclass
class UserRecord:
    """Everything the fake knows about one user."""

    name: str
    state: MockJupyterState = MockJupyterState.LOGGED_OUT
    spawn_form: Optional[Dict[str, str]] = None
    spawn_ready_at: Optional[float] = None
    started: Optional[str] = None
    delete_at: Optional[float] = None
    sessions: Dict[str, OpenSession] = field(default_factory=dict)
    execution_parameters: Optional[MockJupyterExecutionParameters] = None
    fail: Set[MockJupyterAction] = field(default_factory=set)
    # Why the last spawn failed at the form (fail_on SPAWN): as JupyterHub
    # does, the progress stream then reports it, until the next spawn.
    failed_spawn: Optional[str] = None


def seconds(delay: Delay, name: str) -> Optional[float]:
    """Return a delay in seconds, refusing a negative one."""
    if delay is None:
        return None
    value = delay.total_seconds() if isinstance(delay, datetime.timedelta) else float(delay)
    if value < 0:
        raise ValueError(f"{name} must not be negative")
    return value


def iso_now() -> str:
    """Return the time now as JupyterHub writes it."""
    return datetime.datetime.now(tz=datetime.timezone.utc).isoformat()
