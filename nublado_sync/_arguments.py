"""Checks of public arguments, the same everywhere.

Every public call checks its arguments before touching the network, and
refuses a bad one with `NubladoUsageError` naming the argument, the value's
type or the value, and what is expected: never a raw ``AttributeError``
from deep inside, and never a failure halfway through opening a session.
"""

from __future__ import annotations

import datetime
from typing import Any, Optional

from ._exceptions import NubladoUsageError
from ._redact import redact_url

__all__ = [
    "MIN_MESSAGE_SIZE",
    "MIN_TOKEN_LENGTH",
    "check_duration",
    "check_http_url",
    "check_message_size",
    "check_token",
]

# Shorter tokens cannot be scrubbed from logs and messages safely: replacing
# every occurrence of a short string masks ordinary words too, and a real
# token is never this short (JupyterHub's are 32 characters, Gafaelfawr's
# longer still).
MIN_TOKEN_LENGTH = 8

# The smallest sane limit on a kernel message: the kernel's own replies
# (kernel_info_reply with its help links, a short traceback) must fit.
MIN_MESSAGE_SIZE = 64 * 1024


def check_duration(
    value: Any, name: str, user: Optional[str] = None, *, optional: bool = False
) -> Optional[datetime.timedelta]:
    """Return ``value`` if it is a positive `datetime.timedelta`.

    Parameters
    ----------
    value
        The argument.
    name
        Its name, for the message.
    user
        User for the exception.
    optional
        Whether `None` is allowed (for "no deadline").

    Raises
    ------
    NubladoUsageError
        It is not a positive `datetime.timedelta` (nor an allowed `None`).
    """
    if value is None and optional:
        return None
    if not isinstance(value, datetime.timedelta):
        hint = ""
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            hint = f" (for {value} seconds: datetime.timedelta(seconds={value}))"
        raise NubladoUsageError(
            f"{name} must be a datetime.timedelta, not {type(value).__name__}{hint}", user
        )
    if value.total_seconds() <= 0:
        raise NubladoUsageError(f"{name} must be positive, not {value}", user)
    return value


def check_token(token: Any, user: Optional[str] = None) -> str:
    """Return ``token`` if it can be a token.

    Raises
    ------
    NubladoUsageError
        It is not a string, is empty, holds white space, or is too short to
        be a real token (and to be redacted safely). The message never
        shows the token.
    """
    if not isinstance(token, str) or not token:
        raise NubladoUsageError("A token is required", user)
    if any(c.isspace() for c in token):
        raise NubladoUsageError("The token holds white space: it is not a valid token", user)
    if len(token) < MIN_TOKEN_LENGTH:
        raise NubladoUsageError(
            f"The token is {len(token)} characters long: too short to be a valid token"
            f" (at least {MIN_TOKEN_LENGTH})",
            user,
        )
    return token


def check_http_url(url: Any, name: str, user: Optional[str] = None) -> str:
    """Return ``url`` if it is an http or https URL.

    Raises
    ------
    NubladoUsageError
        It is not; the message shows the value (with secrets redacted).
    """
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        shown = redact_url(url) if isinstance(url, str) else type(url).__name__
        raise NubladoUsageError(f"{name} must be an http(s) URL, not {shown!r}", user)
    return url


def check_message_size(value: Any, name: str, user: Optional[str] = None) -> Optional[int]:
    """Return ``value`` if it is `None` or a sane message size limit.

    Raises
    ------
    NubladoUsageError
        It is not an integer, or below `MIN_MESSAGE_SIZE`, which would fail
        on the kernel's own first reply.
    """
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise NubladoUsageError(f"{name} must be an int, not {type(value).__name__}", user)
    if value < MIN_MESSAGE_SIZE:
        raise NubladoUsageError(
            f"{name} must be at least {MIN_MESSAGE_SIZE} bytes, not {value}: the kernel's"
            " own replies would not fit",
            user,
        )
    return value
