"""What ``nublado-sync`` says when something fails: the failure, and what to check.

The exceptions already say what failed in words (see `_reasons`); the command
knows which of its settings led there, and adds one line naming it, for
the reader of a cron mail who has to fix the job.
"""

from __future__ import annotations

from typing import Optional

from ._exceptions import (
    NubladoDiscoveryError,
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoRedirectError,
    NubladoSpawnTimeoutError,
    NubladoTimeoutError,
    NubladoWebError,
    NubladoWebSocketError,
    _code_failure_intro,
)
from ._reasons import WEBSOCKET_OPEN_TIMED_OUT, server_message, token_refused
from ._redact import strip_ansi

__all__ = ["HUB", "LOCAL", "SERVER", "advice", "describe", "interrupted"]

# Where a run goes: the settings to check differ.
HUB = "hub"
SERVER = "server"
LOCAL = "local"

_CODE_FAILURES = (NubladoExecutionError, NubladoExecutionTimeoutError)
# Names of settings, not a secret.
_TOKEN_SETTINGS = "--token-file, NUBLADO_TOKEN_FILE or NUBLADO_TOKEN"  # noqa: S105


def _url_setting(mode: str) -> str:
    if mode == SERVER:
        return "--server-url"
    return "--hub-url or NUBLADO_HUB_URL"


def _web_advice(exc: NubladoWebError, mode: str) -> Optional[str]:
    message = exc.message
    if "does not look like a JupyterHub" in message:
        return (
            f"Check {_url_setting(mode)}: it is the hub's base URL, such as"
            " https://data.example.org/nb; for a Jupyter server without a hub use --server-url."
        )
    if exc.status is not None and token_refused(exc.status, server_message(exc.body)):
        return f"Check the token ({_TOKEN_SETTINGS}): it must be valid for this server and user."
    if exc.status == 403:
        return (
            f"Check the user (--user or NUBLADO_USER) and the token's scopes ({_TOKEN_SETTINGS})."
        )
    if exc.status is None:
        if "not trusted" in message or "TLS" in message:
            return "Check --ca-bundle: it must hold the certificate authority of the server."
        if "read timeout" in message.lower():
            return "The server is slow or stuck; --http-timeout sets how long each answer may take."
        return f"Check {_url_setting(mode)}, and that the server is running and reachable."
    if exc.status == 404 and mode == SERVER:
        return (
            "Check --server-url: it is the Jupyter server's base URL (for a lab: .../user/NAME/)."
        )
    return None


def advice(exc: BaseException, mode: str) -> Optional[str]:
    """Return a line naming the setting to check after ``exc``, if one fits."""
    if isinstance(exc, NubladoExecutionTimeoutError):
        return "--timeout sets the deadline of the code, or of each notebook cell."
    if isinstance(exc, NubladoSpawnTimeoutError):
        return "--spawn-timeout sets how long the lab may take to start."
    if isinstance(exc, NubladoDiscoveryError):
        return "Set --hub-url or NUBLADO_HUB_URL, or check REPERTOIRE_BASE_URL."
    if isinstance(exc, NubladoRedirectError):
        return f"Check {_url_setting(mode)}: the server sent the client elsewhere."
    if isinstance(exc, NubladoWebError):
        return _web_advice(exc, mode)
    if isinstance(exc, NubladoWebSocketError) and exc.code in (401, 403):
        return f"Check the token ({_TOKEN_SETTINGS})."
    if isinstance(exc, NubladoWebSocketError) and exc.dropped:
        return (
            "The connection to the kernel was lost (a network cut, or the lab or a proxy"
            " restarted); --reconnects sets how many times it is opened again."
        )
    if isinstance(exc, NubladoTimeoutError) and WEBSOCKET_OPEN_TIMED_OUT in str(exc):
        return (
            "The new kernel did not answer in time (a crowded lab starts kernels slowly);"
            " --open-timeout sets how long opening a session may take."
        )
    if isinstance(exc, NubladoTimeoutError) and mode == LOCAL:
        return "The local Jupyter server or its kernel did not start in time; try again with -v."
    return None


def _name_the_source(exc: BaseException, text: str, source: Optional[str]) -> str:
    # Code from a file is named by the file, not by its first line.
    if source is None or not isinstance(exc, _CODE_FAILURES) or exc.context.notebook:
        return text
    quoted = _code_failure_intro(exc.user, exc.code, exc.context, "")
    if not text.startswith(quoted):
        return text
    return f"{exc.user}: running {source} " + text[len(quoted) :]


def describe(exc: BaseException, mode: str, tty: bool, source: Optional[str] = None) -> str:
    """Return what the command prints for a failure: the error, then advice.

    Parameters
    ----------
    exc
        The failure.
    mode
        Where the run went: `HUB`, `SERVER` or `LOCAL`.
    tty
        Whether standard error is a terminal (colour codes are kept).
    source
        The file the code came from, to name it in a code failure.
    """
    text = _name_the_source(exc, str(exc), source)
    if not tty:
        text = strip_ansi(text)
    hint = advice(exc, mode) if isinstance(exc, NubladoError) else None
    return f"{text}\n{hint}" if hint else text


def interrupted(what: str, code_started: bool, local: bool) -> str:
    """Return the warning logged after Ctrl-C or a terminating signal.

    Parameters
    ----------
    what
        ``Interrupted``, ``Terminated`` or ``Hung up``.
    code_started
        Whether code was running in a kernel (which was then interrupted).
    local
        Whether a ``--local`` server was running (and was then stopped).
    """
    if code_started:
        done = "the kernel was interrupted and the session deleted"
    else:
        done = "before any code ran"
    if local:
        done += "; the local Jupyter server was stopped"
    return f"{what}; {done}" if code_started else f"{what} {done}"
