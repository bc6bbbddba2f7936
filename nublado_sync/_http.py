"""HTTP: authentication, redirects, XSRF, timeouts and errors, in one place.

Every request the package makes goes through `HTTPSession`. `request`
sends one request with the bearer token and the timeout and turns every
requests, urllib3 and socket failure into `NubladoWebError`. `fetch` adds
what JupyterHub needs (see ``nublado-flow.md``): redirects followed by hand
and confined to the hub and lab URL space, ``Sec-Fetch-Mode``, and the hub's
and the lab's separate XSRF tokens, read from every hop of a redirect chain.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Collection, Dict, List, Mapping, Optional, Union
from urllib.parse import urljoin, urlsplit

from ._cancel import Cancellation
from ._exceptions import NubladoRedirectError, NubladoUsageError, NubladoWebError
from ._logging import Logger
from ._reasons import server_message, status_explanation, transport_failure
from ._redact import redact_body, redact_secrets, redact_url
from ._retry import IDEMPOTENT, RETRY_STATUSES, RetryPolicy

if TYPE_CHECKING:
    import requests

__all__ = [
    "BearerAuth",
    "HTTPSession",
    "URLSpace",
    "check_proxies",
    "is_transient",
    "response_observers",
]

# How much of an error body to keep: enough for a traceback or an HTML
# error page down to its message (JupyterHub's comes after some 6 kB of
# head), not an endless stream.
_MAX_ERROR_BODY = 65536

# The lab login is the longest chain: about six hops, two of them to the
# same URL (the OAuth round trip returns to where it started).
_MAX_HOPS = 20
_MAX_VISITS = 2
_REDIRECTS = (301, 302, 303, 307, 308)
# Bytes read from a response body at a time.
_CHUNK = 65536


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


# Called with every response before its status is looked at. Empty unless
# the testing kit runs in this process: it adds one that turns the calls its
# fake hub saw out of order into AssertionError in the calling thread, as the
# async client's kit does (see nublado_sync/testing/_order.py).
response_observers: List[Callable[[requests.Response], None]] = []


def set_read_timeout(response: requests.Response, seconds: float) -> None:
    """Shorten the socket timeout of a streamed response before a read.

    requests fixes the read timeout when the request is sent; to hold a
    deadline across a long body, it is shortened on the socket before each
    read. The attributes are urllib3's; without them the request's own
    timeout still bounds each read.
    """
    connection = getattr(response.raw, "_connection", None) or getattr(
        response.raw, "connection", None
    )
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.001))


def check_proxies(proxies: Optional[Mapping[str, str]], user: Optional[str]) -> None:
    """Refuse a ``proxies`` setting that is not scheme keys to proxy URLs.

    Raises
    ------
    NubladoUsageError
        It is not a mapping of strings to ``http(s)://`` URLs.
    """
    if proxies is None:
        return
    if not isinstance(proxies, Mapping):
        raise NubladoUsageError(
            "proxies must be a mapping such as {'https': 'http://proxy:3128'}", user
        )
    for key, value in proxies.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise NubladoUsageError("proxies must map strings to strings", user)
        if key != "no_proxy" and not value.startswith(("http://", "https://")):
            raise NubladoUsageError(
                f"proxies[{key!r}] must be an http:// or https:// proxy URL, not"
                f" {redact_proxy(value)!r}",
                user,
            )


def redact_proxy(url: str) -> str:
    """Return a proxy URL without its password, for a message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:<redacted>@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return parts._replace(netloc=netloc).geturl()


def is_transient(error: NubladoWebError) -> bool:
    """Tell whether a failed request may succeed if sent again a little later.

    It may when the answer was 502, 503 or 504 (a gateway whose backend is
    restarting), or when the connection failed or broke (refused, reset,
    closed before an answer). A read timeout is not transient: the server
    may still be working on the request, and sending it again could do the
    work twice.
    """
    import http.client

    import requests
    import urllib3

    if error.status is not None:
        return error.status in RETRY_STATUSES
    # request() raises from None, which hides the cause from tracebacks
    # but keeps it as the context.
    cause = error.__context__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if isinstance(cause, requests.Timeout):
        return False
    if isinstance(cause, requests.ConnectionError):
        # After urllib3 gave up retrying, the last failure is the reason.
        reason = getattr(cause.args[0] if cause.args else None, "reason", None)
        return not isinstance(reason, urllib3.exceptions.ReadTimeoutError)
    # A body cut short: urllib3 2 reports ProtocolError, 1.26 may let
    # http.client's IncompleteRead through.
    return isinstance(
        cause, (urllib3.exceptions.ProtocolError, http.client.IncompleteRead, ConnectionError)
    )


class URLSpace:
    """The URLs this client may talk to: the hub's and one user's lab.

    Parameters
    ----------
    hub_url
        Base URL of the hub, ending in ``/``.
    username
        The user whose lab URLs are allowed.
    """

    def __init__(self, hub_url: str, username: str) -> None:
        self.hub_url = hub_url
        self.username = username
        self.lab_base: Optional[str] = None
        hub = urlsplit(hub_url)
        # With per-user subdomains the lab lives on "<user>.<hub host>".
        self._subdomain_origin = f"{hub.scheme}://{username}.{hub.netloc}"

    @property
    def lab_url(self) -> str:
        """Base URL of the user's lab (``L/user/<name>/``)."""
        return (self.lab_base or self.hub_url) + f"user/{self.username}/"

    def learn(self, url: str) -> None:
        """Remember the lab's host from a redirect to the user's subdomain."""
        parts = urlsplit(url)
        if f"{parts.scheme}://{parts.netloc}" == self._subdomain_origin:
            self.lab_base = self._subdomain_origin + urlsplit(self.hub_url).path

    def reset(self) -> None:
        """Forget the learned lab host."""
        self.lab_base = None

    def name_of(self, url: str) -> Optional[str]:
        """Return ``lab`` or ``hub`` for a URL inside the space, else `None`."""
        if url.startswith(self.lab_url):
            return "lab"
        if url.startswith(self.hub_url):
            return "hub"
        if url.startswith(self._subdomain_origin + urlsplit(self.lab_url).path):
            return "lab"
        return None


class BearerAuth:
    """Adds ``Authorization: Bearer``; set per request so ``.netrc`` can't override it.

    requests accepts any callable as ``auth``.
    """

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
        Bearer token sent with every request; `None` for a service that
        takes no token (service discovery).
    user
        User the requests are for (for exceptions).
    timeout
        Seconds allowed for connecting and for each read.
    verify
        TLS verification: `True`, or the path of a CA bundle.
    logger
        Logger to use.
    retry
        How requests that failed for a passing reason are tried again.
    proxies
        Forward proxies by URL scheme (``http``, ``https``, ``all``) and an
        optional ``no_proxy`` list, replacing the environment's; `None` to
        use the environment's (``HTTPS_PROXY``, ``HTTP_PROXY``,
        ``NO_PROXY``, as requests reads them).
    """

    def __init__(
        self,
        *,
        token: Optional[str],
        user: Optional[str],
        timeout: float,
        verify: Union[bool, str] = True,
        logger: Logger,
        retry: Optional[RetryPolicy] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> None:
        # Imported on first use: `import nublado_sync` stays cheap for cold
        # starts (cron), and requests is the largest import of all.
        import requests
        from requests.adapters import HTTPAdapter

        from ._urllib3_retry import PolicyRetry

        self.user = user
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.session = requests.Session()
        # Retries happen inside urllib3, per request (see _urllib3_retry).
        adapter = HTTPAdapter(max_retries=PolicyRetry.from_policy(self.retry, logger))
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.verify = verify
        # The proxy of each request is chosen by proxy_for, the same way as
        # for the WebSocket; requests must not add the environment's again.
        # (.netrc and the CA variables, also read only with trust_env, are
        # replaced by BearerAuth and ca_bundle.)
        self.session.trust_env = False
        self._proxies = None if proxies is None else dict(proxies)
        self.verify = verify
        self._auth = BearerAuth(token) if token else None
        self._token = token or ""
        self._logger = logger
        self.space: Optional[URLSpace] = None
        self.xsrf: Dict[str, str] = {}
        # Stops this session's requests from another thread (NubladoClient.cancel).
        self.cancellation = Cancellation(user)

    def __repr__(self) -> str:
        return f"<HTTPSession user={self.user!r}>"

    @property
    def logger(self) -> Logger:
        """The logger of the client this session belongs to."""
        return self._logger

    @property
    def token(self) -> str:
        """The bearer token (for the WebSocket handshake)."""
        return self._token

    def ca_bundle(self) -> Union[bool, str]:
        """Return what TLS verification requests will use: a CA path, or `False`.

        With ``verify=True`` that is ``REQUESTS_CA_BUNDLE`` or
        ``CURL_CA_BUNDLE`` when set, else certifi's bundle, as requests
        itself decides.
        """
        if self.verify is not True:
            return self.verify
        import requests

        return (
            os.environ.get("REQUESTS_CA_BUNDLE")
            or os.environ.get("CURL_CA_BUNDLE")
            or requests.utils.DEFAULT_CA_BUNDLE_PATH
        )

    def websocket_sslopt(self) -> Dict[str, Any]:
        """TLS options for websocket-client that trust exactly what HTTP trusts.

        Left alone, websocket-client would use the system store while
        requests uses certifi, and a lab could accept the login but refuse
        the kernel connection.
        """
        import ssl  # on first use, as requests

        bundle = self.ca_bundle()
        if bundle is False:
            return {"cert_reqs": ssl.CERT_NONE, "check_hostname": False}
        assert isinstance(bundle, str)
        if os.path.isdir(bundle):
            return {"ca_cert_path": bundle}
        return {"ca_certs": bundle}

    def proxy_for(self, url: str) -> Optional[str]:
        """Return the URL of the forward proxy for a URL, or `None` to go direct.

        From the explicit ``proxies`` when given, else from the environment
        with requests' rules: ``NO_PROXY`` (host names, their subdomains,
        addresses and CIDR ranges, or ``*``) is honoured, and nothing else
        is exempt, not even ``localhost``. Both HTTP and the kernel
        WebSocket use this one answer.
        """
        from requests.utils import get_environ_proxies, select_proxy, should_bypass_proxies

        if self._proxies is None:
            proxies = get_environ_proxies(url)
        else:
            proxies = dict(self._proxies)
            no_proxy = proxies.pop("no_proxy", None)
            if no_proxy and should_bypass_proxies(url, no_proxy=no_proxy):
                return None
        return select_proxy(url, proxies) or None

    def websocket_proxy_options(self, url: str) -> Dict[str, Any]:
        """Proxy options for websocket-client that agree with `proxy_for`.

        websocket-client reads the proxy variables itself, by other rules
        (lower case first, its own ``no_proxy`` matching), whenever it is
        not told: it is always told. An HTTP proxy is reached with
        ``CONNECT``, for ``ws`` and ``wss`` alike.

        Parameters
        ----------
        url
            The ``ws://`` or ``wss://`` URL.
        """
        from urllib.parse import unquote

        parts = urlsplit(url)
        scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
        proxy = self.proxy_for(parts._replace(scheme=scheme).geturl())
        if proxy is None:
            # Its no_proxy list is read only when a proxy host is set; "*"
            # then says: no proxy for any host.
            return {"http_proxy_host": "none", "http_proxy_port": 1, "http_no_proxy": ["*"]}
        target = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        if target.scheme not in ("http", "https") or not target.hostname:
            raise NubladoWebError(
                f"Unsupported proxy for the WebSocket: {redact_proxy(proxy)}", self.user
            )
        auth = None
        if target.username is not None:
            auth = (unquote(target.username), unquote(target.password or ""))
        return {
            "http_proxy_host": target.hostname,
            "http_proxy_port": target.port or (443 if target.scheme == "https" else 80),
            "http_proxy_auth": auth,
            "proxy_type": "http",
            # A list naming no host: an empty one would make it read
            # NO_PROXY from the environment and decide again.
            "http_no_proxy": [""],
        }

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
        deadline: Optional[float] = None,
    ) -> requests.Response:
        """Send one request without following redirects.

        A request that failed for a passing reason is retried as the retry
        policy says (see `RetryPolicy`), within its timeout and
        ``deadline``.

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
        deadline
            Seconds left to the calling operation's deadline: retries end by
            then.

        Returns
        -------
        requests.Response
            The response, whose status is in ``ok``.

        Raises
        ------
        NubladoWebError
            The request failed or its status is not in ``ok``.
        """
        import requests
        import urllib3

        from ._urllib3_retry import DeadlineTimeout, request_deadline

        read_timeout = self.timeout if timeout is None else timeout
        retry_deadline = self.retry.request_deadline(read_timeout)
        if deadline is not None:
            retry_deadline = min(retry_deadline, deadline)
        # Errors carry when the request began, as upstream's do.
        started_at = _utcnow()
        self.cancellation.check()
        self.cancellation.track(self.session.get_adapter(url))
        start = time.monotonic()
        unrouted = 0
        proxy: Optional[str] = None
        try:
            proxy = self.proxy_for(url)
            while True:
                left = max(retry_deadline - (time.monotonic() - start), 0.001)
                with request_deadline(left):
                    response = self.session.request(
                        method,
                        url,
                        headers=dict(headers or {}),
                        json=json,
                        data=data,
                        params=params,
                        auth=self._auth,
                        # Per request: requests prefers REQUESTS_CA_BUNDLE
                        # over the session's verify, which would ignore an
                        # explicit CA path.
                        verify=self.ca_bundle(),
                        # requests hands a urllib3 Timeout to urllib3 as it is.
                        timeout=DeadlineTimeout(  # type: ignore[arg-type]
                            connect=self.timeout, read=read_timeout
                        ),
                        allow_redirects=False,
                        proxies={"http": proxy, "https": proxy} if proxy else {},
                        # Always streamed: requests reads a body with a
                        # timeout per read, so a server trickling an endless
                        # body would hold the call forever; _read_body reads
                        # it under one deadline.
                        stream=True,
                    )
                if stream:
                    break
                self._read_body(response, read_timeout, started_at)
                # A cancelled read can look like a short body (the socket
                # was shut down under it): never hand one on as complete.
                self.cancellation.check()
                unrouted += 1
                pause = self._unrouted_pause(response, unrouted, start + retry_deadline)
                if pause is None:
                    break
                time.sleep(pause)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            # requests wraps most failures; urllib3 and the socket layer
            # raise their own while a body is read. The library's own text
            # goes to the debug log; the exception says it in words.
            if self.cancellation.blocks():
                raise self.cancellation.error() from None
            self._logger.debug(
                "HTTP request failed",
                method=method,
                url=redact_url(url),
                error=f"{type(e).__name__}: {self.redact(str(e))}",
            )
            words = transport_failure(e, redact_url(url), read_timeout, proxy)
            raise NubladoWebError(
                f"{self.redact(words[:1].upper() + words[1:])} ({method} {url})",
                self.user,
                method=method,
                started_at=started_at,
                url=url,
            ) from None
        self._logger.debug(
            "HTTP request", method=method, url=redact_url(url), status=response.status_code
        )
        for observe in response_observers:
            observe(response)
        if response.status_code not in ok:
            raise self.status_error(response, started_at)
        return response

    def _unrouted_pause(
        self, response: requests.Response, retry: int, end: float
    ) -> Optional[float]:
        # configurable-http-proxy, just restarted, answers a bare "Not Found"
        # (no Content-Type) until the hub has given it its routes again, a
        # few seconds later; urllib3 cannot see a body, so this one case of
        # "later" is retried here. A hub's or a lab's own 404 is a page.
        method = response.request.method or "GET"
        if (
            response.status_code != 404
            or method not in IDEMPOTENT
            or "Content-Type" in response.headers
            or response.content.strip() != b"Not Found"
            or retry > self.retry.retries
        ):
            return None
        pause = self.retry.pause(retry)
        if time.monotonic() + pause >= end:
            return None
        self._logger.info(
            "Retrying HTTP request",
            method=method,
            url=redact_url(response.url),
            reason="status 404 from a proxy without routes",
            retry=retry,
            pause=round(pause, 3),
        )
        return pause

    def _read_body(
        self, response: requests.Response, seconds: float, started_at: datetime.datetime
    ) -> None:
        end = time.monotonic() + seconds
        raw = response.raw
        chunks = []
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                response.close()
                raise NubladoWebError(
                    f"Read timeout: the answer did not end within {seconds:.0f}s"
                    f" ({response.request.method} {response.url})",
                    self.user,
                    method=response.request.method,
                    started_at=started_at,
                    url=response.url,
                )
            set_read_timeout(response, remaining)
            if hasattr(raw, "read1"):
                chunk = raw.read1(_CHUNK, decode_content=True)
            else:  # urllib3 1.26
                chunk = raw.read(_CHUNK, decode_content=True)
            if not chunk:
                break
            chunks.append(chunk)
        # What requests itself does after reading a body.
        response._content = b"".join(chunks)
        response._content_consumed = True  # type: ignore[attr-defined]
        response.close()

    def status_error(
        self, response: requests.Response, started_at: Optional[datetime.datetime] = None
    ) -> NubladoWebError:
        """Build the exception for a response with an unexpected status."""
        import requests

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
        # The page stays in the exception's ``body`` (which redacts XSRF
        # tokens and URL secrets); its message is what people read.
        body = self.redact(body)
        content_type = response.headers.get("Content-Type", "")
        reason = server_message(redact_body(body), content_type)
        explanation = status_explanation(response.status_code, reason)
        return NubladoWebError(
            f"Status {response.status_code} from {method} {url}"
            + (f": {explanation}" if explanation else ""),
            self.user,
            body=body or None,
            method=method,
            started_at=started_at,
            status=response.status_code,
            url=url,
        )

    def reset(self) -> None:
        """Forget cookies, XSRF tokens and the learned lab host."""
        self.session.cookies.clear()
        self.xsrf.clear()
        if self.space is not None:
            self.space.reset()

    def fetch(
        self,
        method: str,
        url: str,
        *,
        navigate: bool = False,
        referer: Optional[str] = None,
        data: Optional[Dict[str, str]] = None,
        json: Any = None,
        params: Optional[Mapping[str, str]] = None,
        headers: Optional[Mapping[str, str]] = None,
        ok: Collection[int] = (200, 201, 202, 204),
        follow: bool = True,
        timeout: Optional[float] = None,
        stream: bool = False,
        deadline: Optional[float] = None,
    ) -> requests.Response:
        """Send a request inside the URL space, following redirects by hand.

        Parameters
        ----------
        method
            HTTP method.
        url
            Absolute URL inside the hub or lab space.
        navigate
            Send ``Sec-Fetch-Mode: navigate`` (a page load) instead of
            ``same-origin`` with the XSRF token.
        referer
            ``Referer`` header to send.
        data
            Form to send.
        json
            Body to send as JSON.
        params
            Query parameters of the first request.
        headers
            Extra headers for every hop.
        ok
            Final statuses that count as success.
        follow
            Follow redirects; when `False` a redirect is returned as is.
        timeout
            Read timeout in seconds; the session's when omitted.
        stream
            Leave the final body unread.
        deadline
            Seconds left to the calling operation's deadline: retries of
            each hop end by then.

        Returns
        -------
        requests.Response
            The final response.

        Raises
        ------
        NubladoRedirectError
            A redirect left the URL space or went round in a loop.
        NubladoWebError
            A request failed or the final status is not in ``ok``.
        """
        space = self.space
        assert space is not None, "fetch needs a URL space"
        # The starting URL counts as a visit: a chain may come back to it
        # once (the OAuth round trip does), not twice.
        visits: Counter[str] = Counter([url])
        hops = 0
        started_at = _utcnow()
        while True:
            name = space.name_of(url)
            if name is None:
                raise NubladoRedirectError(
                    "Unexpected redirect", url, self.user, started_at=started_at
                )
            hop_headers = {"Sec-Fetch-Mode": "navigate" if navigate else "same-origin"}
            if not navigate and name in self.xsrf:
                hop_headers["X-XSRFToken"] = self.xsrf[name]
            if referer:
                hop_headers["Referer"] = referer
            hop_headers.update(headers or {})
            response = self.request(
                method,
                url,
                headers=hop_headers,
                data=data,
                json=json,
                params=params,
                ok=range(100, 600),
                timeout=timeout,
                stream=stream,
                deadline=deadline,
            )
            self._remember_xsrf(response, space)
            if not follow or response.status_code not in _REDIRECTS:
                break
            location = response.headers.get("Location")
            response.close()
            if not location:
                raise NubladoWebError(
                    f"Redirect without Location from {method} {url}",
                    self.user,
                    method=method,
                    status=response.status_code,
                    url=url,
                )
            url = urljoin(url, location)
            hops += 1
            visits[url] += 1
            if hops > _MAX_HOPS or visits[url] > _MAX_VISITS:
                raise NubladoRedirectError("Redirect loop", url, self.user, started_at=started_at)
            if response.status_code in (301, 302, 303) and method not in ("GET", "HEAD"):
                # What a browser does: the answer to a POST is fetched.
                method, data, json = "GET", None, None
            params = None
            space.learn(url)
        if response.status_code not in ok:
            raise self.status_error(response, started_at)
        return response

    def _remember_xsrf(self, response: requests.Response, space: URLSpace) -> None:
        # The hub's and the lab's _xsrf cookies share a name but not a path,
        # and are often set only on intermediate redirects; file each under
        # the space of the URL that set it. Iterating avoids requests'
        # CookieConflictError when both are in the jar.
        for cookie in response.cookies:
            if cookie.name == "_xsrf" and cookie.value:
                name = space.name_of(response.url)
                if name is not None:
                    self.xsrf[name] = cookie.value

    def close(self) -> None:
        """Close pooled connections."""
        self.session.close()
