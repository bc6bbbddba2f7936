"""Failures in words: what a person reads when a request or a server fails.

The HTTP layer (`_http`) decides what to retry and when to give up; this
module only says what went wrong, in a sentence a cron mail's reader can act
on: ``cannot connect to 127.0.0.1:9: connection refused`` rather than
urllib3's ``HTTPConnectionPool(...): Max retries exceeded (Caused by ...)``,
and an error page's own message rather than the page.
"""

from __future__ import annotations

import errno
import html
import json
import re
from typing import Iterator, Optional
from urllib.parse import urlsplit

from ._redact import strip_ansi

__all__ = [
    "WEBSOCKET_OPEN_TIMED_OUT",
    "one_line",
    "server_message",
    "status_explanation",
    "token_refused",
    "transport_failure",
]

WEBSOCKET_OPEN_TIMED_OUT = "Timed out attempting to open WebSocket to lab session"
"""Opening a session's kernel WebSocket (with the kernel's first answer) took too long.

The async client's words; the command's advice recognises them (`._cli_messages`).
"""

# The longest server message quoted in an exception: a sentence or two.
_MAX_MESSAGE = 300

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_SCRIPT = re.compile(r"(?is)<(script|style)\b.*?</\1\s*>")
# Jupyter Server's and JupyterHub's error pages put the status and its
# explanation in <div class="error">; other servers at least in <title>.
_ERROR_DIV = re.compile(r"""(?is)<div[^>]*class=["'][^"']*\berror\b[^"']*["'][^>]*>(.*?)</div>""")
# JupyterHub's spawn form, answered again with 500 when the spawn failed at
# once, puts its message in <p class="spawn-error-msg ...">; the page also
# has a hidden error dialog (class "ajax-error") holding placeholder text.
_SPAWN_ERROR = re.compile(
    r"""(?is)<p[^>]*class=["'][^"']*\bspawn-error-msg\b[^"']*["'][^>]*>(.*?)</p>"""
)
_TITLE = re.compile(r"(?is)<title[^>]*>(.*?)</title>")
_H1 = re.compile(r"(?is)<h1[^>]*>(.*?)</h1>")


def one_line(text: str, limit: int = _MAX_MESSAGE) -> str:
    """Squeeze text into one line of at most ``limit`` characters.

    White space runs become one space and colour codes go; a cut is made
    at a word boundary and marked with an ellipsis.
    """
    flat = _SPACE.sub(" ", strip_ansi(text)).strip()
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def _html_text(fragment: str) -> str:
    return html.unescape(_TAG.sub(" ", _SCRIPT.sub(" ", fragment)))


def server_message(body: Optional[str], content_type: str = "") -> Optional[str]:
    """Return the message of an error response, shortened to one line.

    A JSON body's ``message`` (Jupyter Server's and JupyterHub's API
    errors), an HTML error page's error text or title, or the start of a
    plain-text body. `None` for an empty body.
    """
    if not body or not body.strip():
        return None
    text = body.strip()
    if "json" in content_type or text.startswith("{"):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            for key in ("message", "reason", "error", "detail"):
                value = parsed.get(key)
                if isinstance(value, str) and value.strip():
                    return one_line(value)
    if "html" in content_type or text[:200].lstrip().lower().startswith(("<!doctype", "<html")):
        for pattern in (_SPAWN_ERROR, _ERROR_DIV, _TITLE, _H1):
            match = pattern.search(text)
            if match:
                found = one_line(_html_text(match.group(1)))
                if found:
                    return found
        return one_line(_html_text(text)) or None
    return one_line(text)


def token_refused(status: int, message: Optional[str]) -> bool:
    """Tell whether an error answer means the server did not accept the token.

    401 always does; so does a 403 whose message is about the token (a
    hub's login handler: ``Unknown token``). A Jupyter server that does not
    recognise the token treats the request as a browser's, and then refuses
    a POST for its missing XSRF form field (``'_xsrf' argument missing from
    POST``, 403): with a token that was accepted, no XSRF check is made.
    """
    if status == 401:
        return True
    if status != 403 or message is None:
        return False
    return "_xsrf" in message or "token" in message.lower()


def status_explanation(status: int, message: Optional[str]) -> Optional[str]:
    """Say in words what an error status means for this client, if it is clear."""
    if token_refused(status, message):
        return "the token was refused (wrong, expired, or for another user or server)"
    if status == 403:
        return "access refused (the token lacks a scope or belongs to another user)"
    if status in (502, 503, 504):
        return "the server (or a proxy in front of it) is unavailable"
    return None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    # requests wraps urllib3, which wraps the socket error: the reason is
    # at the bottom, in args, ``reason`` or the exception chain.
    seen = set()
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        reason = getattr(current, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
        todo.extend(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                todo.append(linked)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc or url


def _any(exc: BaseException, *names: str) -> bool:
    return any(type(c).__name__ in names for c in _causes(exc))


def transport_failure(
    exc: BaseException, url: str, timeout: Optional[float] = None, proxy: Optional[str] = None
) -> str:
    """Say in words why a request got no answer.

    Parameters
    ----------
    exc
        What requests, urllib3 or the socket layer raised.
    url
        The request's URL (already redacted).
    timeout
        The read timeout in seconds, for the message.
    proxy
        The forward proxy the request went through, if any.

    Returns
    -------
    str
        Such as ``cannot connect to 127.0.0.1:9: connection refused``.
    """
    # Imported here: the package's import stays cheap (see _http).
    import socket
    import ssl

    where = _where(url)
    causes = list(_causes(exc))
    if proxy and _any(exc, "ProxyError"):
        # The proxy failed, not the server behind it: name the proxy (never
        # its password), or the reader goes looking at the wrong machine.
        parts = urlsplit(proxy)
        where = f"the forward proxy {parts.hostname}" + (f":{parts.port}" if parts.port else "")
    for cause in causes:
        if isinstance(cause, ConnectionRefusedError) or (
            isinstance(cause, OSError) and cause.errno == errno.ECONNREFUSED
        ):
            return f"cannot connect to {where}: connection refused"
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            return f"cannot connect to {where}: the host name does not resolve"
    if _any(exc, "ConnectTimeout", "ConnectTimeoutError"):
        return f"cannot connect to {where}: no answer to the connection attempt in time"
    if _any(exc, "ReadTimeout", "ReadTimeoutError", "timeout", "TimeoutError"):
        seconds = f" within {timeout:.0f}s" if timeout else ""
        return f"read timeout: no answer from {where}{seconds}"
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            detail = cause.verify_message or "verification failed"
            return f"the TLS certificate of {where} is not trusted: {detail}"
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return f"TLS with {where} failed: {one_line(str(cause.reason or cause), 120)}"
    if _any(
        exc, "RemoteDisconnected", "ProtocolError", "ConnectionResetError", "ChunkedEncodingError"
    ):
        return f"{where} closed the connection without a complete answer"
    if _any(exc, "ResponseError"):
        return f"{where} kept answering with errors: {one_line(str(exc), 160)}"
    if _any(exc, "InvalidURL", "InvalidSchema", "MissingSchema", "LocationParseError"):
        return f"not a valid URL: {url}"
    innermost = causes[-1] if causes else exc
    return f"request to {where} failed: {type(innermost).__name__}: {one_line(str(innermost), 160)}"


# What an established connection's socket error means, in words.
_CONNECTION_ERRORS = {
    errno.ECONNRESET: "the connection was reset (by the lab, a proxy or the network)",
    errno.EPIPE: "the connection was closed at the other end",
    errno.ECONNABORTED: "the connection was aborted",
    errno.ETIMEDOUT: "the network stopped answering (TCP timeout)",
    errno.EHOSTUNREACH: "the lab's host became unreachable",
    errno.ENETUNREACH: "the network became unreachable",
    errno.ENETDOWN: "the network went down",
}


def connection_failure(exc: OSError) -> str:
    """Say in words why an open connection failed.

    Parameters
    ----------
    exc
        The socket error.

    Returns
    -------
    str
        Such as ``the connection was reset (by the lab, a proxy or the network)``.
    """
    words = _CONNECTION_ERRORS.get(exc.errno) if exc.errno is not None else None
    if words is not None:
        return words
    detail = exc.strerror or str(exc) or type(exc).__name__
    return f"the connection failed: {one_line(detail, 160)}"
