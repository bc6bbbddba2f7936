"""Scrubbing secrets out of text that may reach a log or an exception."""

from __future__ import annotations

import re
from typing import Iterable, Optional

__all__ = ["REDACTED", "redact_body", "redact_secrets", "redact_url"]

REDACTED = "<redacted>"

_ANSI = re.compile(r"(?:\x1B[@-_]|[\x80-\x9F])[0-?]*[ -/]*[@-~]")

# JupyterHub pages embed the XSRF token as ``xsrf_token: "value"`` (the key
# is not quoted, the value is); be lenient about quoting and spacing.
_XSRF_IN_PAGE = re.compile(r"""(?i)(["']?_?xsrf_?token["']?\s*[:=]\s*["'])([^"']*)(["'])""")
# Hidden form fields: <input type="hidden" name="_xsrf" value="...">.
_XSRF_INPUT = re.compile(r"""(?i)(name=["']_xsrf["'][^>]*?value=["'])([^"']*)""")

# Query parameters that carry secrets, plain or percent-encoded once or
# twice (a login redirect's ``next=`` holds an encoded OAuth URL). The value
# ends at the next parameter separator in whichever encoding it uses.
_SECRET_PARAMS = r"state|code|token|_xsrf|access_token|code_challenge"  # noqa: S105
_URL_SECRET = re.compile(
    rf"(?i)(?<![A-Za-z_])((?:{_SECRET_PARAMS})(?:=|%3D|%253D))"
    r"((?:(?!%26|%2526)[^&#\s\"'<>])*)"
)


def strip_ansi(text: str) -> str:
    """Remove ANSI escape sequences (kernel tracebacks are colourised)."""
    return _ANSI.sub("", text)


def redact_url(url: str) -> str:
    """Replace the values of secret-bearing query parameters in a URL."""
    return _URL_SECRET.sub(lambda m: m.group(1) + REDACTED, url)


def redact_body(body: str) -> str:
    """Replace XSRF tokens and URL secrets in a response body."""
    body = _XSRF_IN_PAGE.sub(lambda m: m.group(1) + REDACTED + m.group(3), body)
    body = _XSRF_INPUT.sub(lambda m: m.group(1) + REDACTED, body)
    return redact_url(body)


def redact_secrets(text: str, secrets: Iterable[Optional[str]]) -> str:
    """Replace every literal occurrence of each secret.

    The secrets are matched as plain text, never as patterns, so a secret
    with regular-expression metacharacters is still found.
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
