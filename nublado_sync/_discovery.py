"""Finding the Nublado hub through Rubin service discovery (Repertoire)."""

from __future__ import annotations

import datetime
import os
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping, Optional, Union

from ._arguments import check_http_url
from ._exceptions import NubladoDiscoveryError, NubladoUsageError, NubladoWebError
from ._logging import Logger, default_logger
from ._reasons import one_line
from ._retry import RetryPolicy

if TYPE_CHECKING:
    from ._http import HTTPSession

__all__ = ["DiscoveryClient"]


class DiscoveryClient:
    """Reads the hub URL from a Repertoire discovery service.

    The discovery document is fetched unauthenticated from
    ``{base_url}/discovery`` and cached (for five minutes by default). When a refresh
    fails, the last good answer is served (with a warning) rather than
    failing a job over a discovery hiccup.

    Parameters
    ----------
    base_url
        Base URL of the discovery service; ``REPERTOIRE_BASE_URL`` from the
        environment when omitted.
    timeout
        Seconds allowed for the request.
    cache_time
        How long an answer is used before it is fetched again.
    verify
        TLS verification: `True`, or the path of a CA bundle.
    logger
        Logger to use.
    retry
        How a request that failed for a passing reason (connection refused
        or reset, 502, 503, 504) is tried again, within ``timeout``;
        `RetryPolicy` ``()`` by default, `RetryPolicy.off` to fail at once.
    proxies
        Forward proxies by URL scheme, with an optional ``no_proxy`` entry,
        as for `NubladoClient`; `None` (the default) uses the
        environment's ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``.

    Raises
    ------
    NubladoUsageError
        An argument is invalid: a ``base_url`` that is not http(s), a
        ``timeout`` that is not a positive number, a negative
        ``cache_time``, a ``retry`` that is not a `RetryPolicy`, or
        ``proxies`` that do not map schemes to proxy URLs.
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        timeout: float = 30.0,
        cache_time: datetime.timedelta = datetime.timedelta(minutes=5),
        verify: Union[bool, str] = True,
        logger: Optional[Logger] = None,
        retry: Optional[RetryPolicy] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> None:
        from ._http import check_proxies

        if base_url is not None:
            check_http_url(base_url, "base_url")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise NubladoUsageError(
                f"DiscoveryClient timeout must be a positive number of seconds, not {timeout!r}"
            )
        if not isinstance(cache_time, datetime.timedelta) or cache_time.total_seconds() < 0:
            raise NubladoUsageError(
                f"cache_time must be a datetime.timedelta of zero or more, not {cache_time!r}"
            )
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise NubladoUsageError("retry must be a RetryPolicy")
        check_proxies(proxies, None)
        self._base_url = base_url
        self._timeout = float(timeout)
        self._cache_seconds = cache_time.total_seconds()
        self._verify = verify
        self._logger = logger or default_logger()
        self._retry = retry
        self._proxies = proxies
        # Made on first fetch: requests is the largest import of all.
        self._http: Optional[HTTPSession] = None
        self._lock = threading.Lock()
        self._cached: Optional[Any] = None
        self._fetched_at = 0.0

    def __repr__(self) -> str:
        return f"DiscoveryClient(base_url={self._base_url!r})"

    def url_for_ui(self, name: str) -> str:
        """Return the URL of a user-facing service, such as ``nublado``.

        Parameters
        ----------
        name
            Service name under ``services.ui``.

        Returns
        -------
        str
            The service URL, without a trailing slash.

        Raises
        ------
        NubladoDiscoveryError
            No discovery service is configured, it cannot be reached (and
            nothing is cached), or it does not list the service.
        """
        document = self._document()
        try:
            url = document["services"]["ui"][name]["url"]
        except (KeyError, TypeError):
            raise NubladoDiscoveryError(
                f"Service discovery does not list ui service {name!r}"
            ) from None
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise NubladoDiscoveryError(f"Service discovery gives no URL for {name!r}")
        return url.rstrip("/")

    def _document(self) -> Any:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._fetched_at < self._cache_seconds:
                return self._cached
            try:
                self._cached = self._fetch()
                self._fetched_at = now
            except NubladoDiscoveryError as e:
                if self._cached is None:
                    raise
                self._logger.warning(
                    "Service discovery failed, using cached data", error=one_line(str(e))
                )
                self._logger.debug("Service discovery failure", exc_info=True)
            return self._cached

    def _fetch(self) -> Any:
        base = self._base_url or os.environ.get("REPERTOIRE_BASE_URL")
        if not base:
            raise NubladoDiscoveryError(
                "No hub URL given and REPERTOIRE_BASE_URL is not set for service discovery"
            )
        url = base.rstrip("/") + "/discovery"
        setting = "base_url" if self._base_url else "REPERTOIRE_BASE_URL"
        if self._http is None:
            from ._http import HTTPSession

            # Unauthenticated: the discovery document is public, and the
            # user's token has no business going to another service.
            self._http = HTTPSession(
                token=None,
                user=None,
                timeout=self._timeout,
                verify=self._verify,
                logger=self._logger,
                retry=self._retry,
                proxies=self._proxies,
            )
        try:
            response = self._http.request("GET", url, ok=(200,))
        except NubladoWebError as e:
            if e.status is not None:
                raise NubladoDiscoveryError(
                    f"Service discovery at {url} answered status {e.status}; check {setting}"
                ) from None
            raise NubladoDiscoveryError(
                f"Service discovery failed: {one_line(str(e))};"
                f" check {setting} and the proxy settings"
            ) from None
        try:
            return response.json()
        except ValueError:
            raise NubladoDiscoveryError(
                f"Service discovery at {url} did not answer JSON; check {setting}"
            ) from None
