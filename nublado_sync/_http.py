"""HTTP requests: authentication, timeouts and errors, in one place.

Every request the package makes goes through `HTTPSession.request`, which
adds the bearer token, applies the timeout, and turns every requests,
urllib3 and socket failure into `NubladoWebError`.
"""

from __future__ import annotations

from typing import Any, Collection, Dict, Mapping, Optional, Union

import requests

from ._exceptions import NubladoWebError
from ._logging import Logger
from ._redact import redact_secrets, redact_url

__all__ = ["BearerAuth", "HTTPSession"]

# How much of an error body to keep: enough for a traceback or an HTML
# error page's message, not a whole page.
_MAX_ERROR_BODY = 4096


class BearerAuth(requests.auth.AuthBase):
    """Adds ``Authorization: Bearer``; set per request so ``.netrc`` can't override it."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<redacted>)"


class HTTPSession:
    """One cookie jar and connection pool, authenticated with a token.

    Parameters
    ----------
    token
        Bearer token sent with every request.
    user
        User the requests are for (for exceptions).
    timeout
        Seconds allowed for connecting and for each read.
    verify
        TLS verification: `True`, or the path of a CA bundle.
    logger
        Logger to use.
    """

    def __init__(
        self,
        *,
        token: str,
        user: Optional[str],
        timeout: float,
        verify: Union[bool, str] = True,
        logger: Logger,
    ) -> None:
        self.user = user
        self.timeout = timeout
        self.session = requests.Session()
        self.session.verify = verify
        self.verify = verify
        self._auth = BearerAuth(token)
        self._token = token
        self._logger = logger

    def __repr__(self) -> str:
        return f"<HTTPSession user={self.user!r}>"

    @property
    def token(self) -> str:
        """The bearer token (for the WebSocket handshake)."""
        return self._token

    def redact(self, text: str) -> str:
        """Remove the token from text bound for a log or an exception."""
        return redact_secrets(text, [self._token])

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Optional[Mapping[str, str]] = None,
        json: Any = None,
        data: Optional[Union[str, bytes, Dict[str, str]]] = None,
        params: Optional[Mapping[str, str]] = None,
        ok: Collection[int] = (200, 201, 202, 204),
        timeout: Optional[float] = None,
        stream: bool = False,
    ) -> requests.Response:
        """Send one request without following redirects.

        Parameters
        ----------
        method
            HTTP method.
        url
            Absolute URL.
        headers
            Extra headers.
        json
            Body to send as JSON.
        data
            Body to send as is, or a form.
        params
            Query parameters.
        ok
            Statuses that count as success.
        timeout
            Read timeout in seconds; the session's when omitted.
        stream
            Leave the body unread (for event streams).

        Returns
        -------
        requests.Response
            The response, whose status is in ``ok``.

        Raises
        ------
        NubladoWebError
            The request failed or its status is not in ``ok``.
        """
        read_timeout = self.timeout if timeout is None else timeout
        try:
            response = self.session.request(
                method,
                url,
                headers=dict(headers or {}),
                json=json,
                data=data,
                params=params,
                auth=self._auth,
                timeout=(self.timeout, read_timeout),
                allow_redirects=False,
                stream=stream,
            )
        except (requests.RequestException, OSError, ValueError) as e:
            # requests wraps most failures; urllib3 and the socket layer
            # leak a few (e.g. a read error inside a chunked body).
            text = self.redact(str(e))
            raise NubladoWebError(
                f"{type(e).__name__}: {text}", self.user, method=method, url=url
            ) from None
        if response.status_code not in ok:
            raise self.status_error(response)
        return response

    def status_error(self, response: requests.Response) -> NubladoWebError:
        """Build the exception for a response with an unexpected status."""
        method = response.request.method or "GET"
        url = redact_url(response.url or "")
        try:
            # Read a bounded prefix: a streamed body may never end.
            raw = next(response.iter_content(_MAX_ERROR_BODY), b"")
            body = raw.decode(response.encoding or "utf-8", errors="replace")
        except (requests.RequestException, OSError, ValueError, StopIteration):
            body = ""
        finally:
            response.close()
        return NubladoWebError(
            f"Status {response.status_code} from {method} {url}",
            self.user,
            body=self.redact(body) or None,
            method=method,
            status=response.status_code,
            url=url,
        )

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()
