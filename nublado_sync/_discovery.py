"""Finding the Nublado hub through Rubin service discovery (Repertoire)."""

from __future__ import annotations

import datetime
import json
import os
import threading
import time
from typing import Any, Optional, Union

from ._exceptions import NubladoDiscoveryError
from ._logging import Logger, default_logger
from ._reasons import one_line

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
    """

    def __init__(
        self,
        base_url: Optional[str] = None,
        *,
        timeout: float = 30.0,
        cache_time: datetime.timedelta = datetime.timedelta(minutes=5),
        verify: Union[bool, str] = True,
        logger: Optional[Logger] = None,
    ) -> None:
        self._base_url = base_url
        self._timeout = timeout
        self._cache_seconds = cache_time.total_seconds()
        self._verify = verify
        self._logger = logger or default_logger()
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
        import requests  # on first use, see _http

        try:
            response = requests.get(
                url, timeout=self._timeout, verify=self._verify, allow_redirects=False
            )
        except (requests.RequestException, OSError, ValueError) as e:
            raise NubladoDiscoveryError(
                f"Cannot reach service discovery at {url}: {type(e).__name__}: {e}"
            ) from None
        if response.status_code != 200:
            raise NubladoDiscoveryError(
                f"Service discovery at {url} answered status {response.status_code}"
            )
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError):
            raise NubladoDiscoveryError(f"Service discovery at {url} did not answer JSON") from None
