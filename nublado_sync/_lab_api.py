"""The Jupyter server REST API that sessions need: create, delete, interrupt."""

from __future__ import annotations

import datetime
import json
import time
import uuid
from typing import TYPE_CHECKING, Any, Callable, Collection, Dict, List, Optional, Tuple, Union
from urllib.parse import quote, urlsplit, urlunsplit

from ._deadline import Deadline
from ._exceptions import NubladoError, NubladoProtocolError, NubladoWebError
from ._http import HTTPSession, is_transient

if TYPE_CHECKING:
    import requests

__all__ = ["LabAPI"]


_RELOGIN = (301, 302, 303, 307, 308, 403)
# Read timeout of the clean-up after a failed session creation, in seconds.
_CLEANUP = 5.0


def _no_headers() -> Dict[str, str]:
    return {}


class LabAPI:
    """REST calls to one Jupyter server (a lab).

    Parameters
    ----------
    http
        Authenticated HTTP session.
    base_url
        Base URL of the server, such as ``https://host/user/name/``, or a
        function returning it: behind a hub with per-user subdomains the
        lab's host is learned by the login, which may come after this API
        is made (a retry after a re-login must go to the learned host).
    extra_headers
        Returns headers to add to each API request; the hub client uses it
        for the lab's XSRF token and ``Sec-Fetch-Mode``.
    reauth
        Called when the lab answers with a redirect or a 403, which is how
        an expired lab login shows; the request is then sent once more.
        Without it those answers are errors.
    """

    def __init__(
        self,
        http: HTTPSession,
        base_url: Union[str, Callable[[], str]],
        *,
        extra_headers: Callable[[], Dict[str, str]] = _no_headers,
        reauth: Optional[Callable[[], None]] = None,
    ) -> None:
        self.http = http
        self._base_url = base_url
        self._extra_headers = extra_headers
        self._reauth = reauth

    @property
    def base_url(self) -> str:
        """Base URL of the server, ending in ``/``, as known now."""
        base = self._base_url() if callable(self._base_url) else self._base_url
        return base if base.endswith("/") else base + "/"

    def relogin(self) -> bool:
        """Log in to the lab again, if this API knows how; tell whether it did."""
        if self._reauth is None:
            return False
        self._reauth()
        return True

    def _call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        data: Optional[bytes] = None,
        params: Optional[Dict[str, str]] = None,
        headers: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        ok: Collection[int] = (200, 201, 204),
    ) -> requests.Response:
        # Redirects are never followed: a lab POST or DELETE cannot survive
        # one, and it would carry the token wherever it pointed. An expired
        # lab login shows as a redirect into OAuth, or, for a POST, as a 403
        # from the XSRF check that runs first: log in again, retry once.
        statuses = (*ok, *_RELOGIN) if self._reauth else ok

        def send(statuses: Collection[int]) -> requests.Response:
            return self.http.request(
                method,
                self.url(path),
                json=json,
                data=data,
                params=params,
                headers={**self._extra_headers(), **(headers or {})},
                timeout=timeout,
                ok=statuses,
            )

        response = send(statuses)
        if response.status_code in _RELOGIN and response.status_code not in ok:
            response.close()
            self.relogin()
            response = send(ok)
        return response

    def url(self, path: str) -> str:
        """Absolute URL of an API path relative to the base URL."""
        return self.base_url + path

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        response = self._call(method, path, json=body)
        try:
            return response.json()
        except (ValueError, json.JSONDecodeError) as e:
            raise NubladoProtocolError(
                f"{method} {path} did not answer JSON", self.http.user
            ) from e

    def create_session(
        self, *, kernel_name: Optional[str], notebook_name: Optional[str]
    ) -> Tuple[str, str]:
        """Create a console session with a new kernel.

        Returns
        -------
        tuple of str
            The session id and the kernel id.

        Raises
        ------
        NubladoWebError
            The server refused or failed.
        NubladoProtocolError
            The answer lacks the ids.
        """
        kernel: Dict[str, str] = {"name": kernel_name} if kernel_name else {}
        # A console session with a unique path is the one type every server
        # (jupyter-server-documents included) can also delete again, and
        # the path finds it again when the answer is lost.
        path = uuid.uuid4().hex
        body = {"kernel": kernel, "name": notebook_name or "", "path": path, "type": "console"}
        try:
            answer = self._create_once(path, body)
        except BaseException:
            # The answer was lost (a timeout, a dropped connection, Ctrl-C),
            # but the server may have made the session and its kernel.
            self._delete_by_path(path)
            raise
        try:
            session_id = answer["id"]
            kernel_id = answer["kernel"]["id"]
            if not isinstance(session_id, str) or not isinstance(kernel_id, str):
                raise TypeError("ids are not strings")
        except (KeyError, TypeError) as e:
            self._delete_by_path(path)
            raise NubladoProtocolError(
                "Session creation answer lacks the session or kernel id", self.http.user
            ) from e
        return session_id, kernel_id

    def _create_once(self, path: str, body: Dict[str, Any]) -> Any:
        # Sent again only when the failure may pass (see is_transient) and
        # the server has no session with our path: never two kernels.
        policy = self.http.retry
        deadline = Deadline(datetime.timedelta(seconds=policy.request_deadline(self.http.timeout)))
        retries = 0
        while True:
            try:
                return self._json("POST", "api/sessions", body)
            except NubladoWebError as e:
                if not is_transient(e):
                    raise
                error = e
            while True:
                retries += 1
                pause = policy.pause(retries)
                remaining = deadline.remaining()
                if retries > policy.retries or (remaining is not None and pause >= remaining):
                    raise error
                self.http.logger.info(
                    "Session creation failed, looking for the session before asking again",
                    error=str(error).splitlines()[0],
                    retry=retries,
                    pause=round(pause, 3),
                )
                time.sleep(pause)
                try:
                    found = self._find_by_path(path)
                except NubladoWebError as e:
                    if not is_transient(e):
                        raise
                    error = e
                    continue
                if found is not None:
                    self.http.logger.info("Found the session the lost answer was for")
                    return found
                break

    def _find_by_path(self, path: str) -> Optional[Dict[str, Any]]:
        for session in self.list_sessions():
            if isinstance(session, dict) and session.get("path") == path:
                return session
        return None

    def _delete_by_path(self, path: str) -> None:
        # The server may have created the session even though its answer is
        # lost or unusable; our unique path finds it again. Best effort, and
        # brief: it runs on the way out of a failure (a cancellation too).
        with self.http.cancellation.cleanup():
            self._find_and_delete(path)

    def _find_and_delete(self, path: str) -> None:
        # Retries end within the client's HTTP timeout, as the failed
        # request did.
        retry_deadline = self.http.timeout
        try:
            response = self.http.request(
                "GET",
                self.url("api/sessions"),
                headers=self._extra_headers(),
                timeout=_CLEANUP,
                deadline=retry_deadline,
            )
            for session in response.json():
                if isinstance(session, dict) and session.get("path") == path:
                    self.http.request(
                        "DELETE",
                        self.url(f"api/sessions/{quote(str(session.get('id')), safe='')}"),
                        headers=self._extra_headers(),
                        timeout=_CLEANUP,
                        deadline=retry_deadline,
                        ok=(200, 204, 404),
                    )
        except (NubladoWebError, ValueError, TypeError):
            pass

    def delete_session(self, session_id: str) -> None:
        """Delete a session, which also shuts its kernel down; gone is fine.

        Raises
        ------
        NubladoWebError
            The server failed.
        """
        self._call("DELETE", f"api/sessions/{quote(session_id, safe='')}", ok=(200, 204, 404))

    def delete_kernel(self, kernel_id: str) -> None:
        """Shut a kernel down; gone is fine.

        Raises
        ------
        NubladoWebError
            The server failed.
        """
        self._call("DELETE", f"api/kernels/{quote(kernel_id, safe='')}", ok=(200, 204, 404))

    def list_sessions(self) -> List[Dict[str, Any]]:
        """All sessions on the server.

        Raises
        ------
        NubladoWebError
            The server failed.
        NubladoProtocolError
            The answer is not a JSON list.
        """
        answer = self._json("GET", "api/sessions")
        if not isinstance(answer, list):
            raise NubladoProtocolError("Session list is not a list", self.http.user)
        return answer

    def kernel_exists(self, kernel_id: str, timeout: Optional[float] = None) -> Optional[bool]:
        """Whether the lab still has a kernel; `None` when it did not say.

        Only the lab's own list counts: a proxy that lost its routes, or a
        hub between restarts, answers 404 for everything, which says
        nothing about the kernel. Never raises; ``timeout`` bounds each
        read (the HTTP session's when `None`).
        """
        try:
            answer = self._call("GET", "api/kernels", timeout=timeout).json()
        except (NubladoError, ValueError):
            return None
        if not isinstance(answer, list):
            return None
        return any(isinstance(k, dict) and k.get("id") == kernel_id for k in answer)

    def interrupt_kernel(self, kernel_id: str) -> None:
        """Interrupt a kernel through the REST API.

        Raises
        ------
        NubladoWebError
            The server refused or failed.
        """
        self._call("POST", f"api/kernels/{quote(kernel_id, safe='')}/interrupt")

    def execute_notebook(
        self,
        content: str,
        *,
        kernel_name: Optional[str],
        clear_local_site_packages: bool,
        read_timeout: float,
    ) -> Dict[str, Any]:
        """Run a notebook with the Rubin execution extension (``rubin/execution``).

        Returns
        -------
        dict
            The extension's JSON answer.

        Raises
        ------
        NubladoWebError
            The request failed, timed out, or was refused.
        NubladoProtocolError
            The answer is not a JSON object.
        """
        params: Dict[str, str] = {}
        headers = {"Content-Type": "application/json"}
        if kernel_name:
            # Older lab images read the kernel only from the header.
            params["kernel_name"] = kernel_name
            headers["X-Kernel-Name"] = kernel_name
        if clear_local_site_packages:
            params["clear_local_site_packages"] = "true"
        response = self._call(
            "POST",
            "rubin/execution",
            data=content.encode(),
            params=params,
            headers=headers,
            timeout=read_timeout,
            ok=(200,),
        )
        try:
            answer = response.json()
        except ValueError as e:
            raise NubladoProtocolError(
                "Notebook execution answer is not JSON", self.http.user
            ) from e
        if not isinstance(answer, dict):
            raise NubladoProtocolError("Notebook execution answer is not an object", self.http.user)
        return answer

    def channels_url(self, kernel_id: str, client_id: str) -> str:
        """WebSocket URL of a kernel's channels: ``ws`` for http, ``wss`` for https.

        Raises
        ------
        NubladoWebError
            The base URL is neither http nor https.
        """
        parts = urlsplit(self.url(f"api/kernels/{quote(kernel_id, safe='')}/channels"))
        schemes = {"http": "ws", "https": "wss"}
        if parts.scheme not in schemes:
            raise NubladoWebError(f"Unsupported URL scheme {parts.scheme!r}", self.http.user)
        query = f"session_id={quote(client_id, safe='')}"
        return urlunsplit((schemes[parts.scheme], parts.netloc, parts.path, query, ""))

    def websocket_headers(self) -> List[str]:
        """Headers for the WebSocket handshake."""
        headers = {"Authorization": f"Bearer {self.http.token}", **self._extra_headers()}
        return [f"{k}: {v}" for k, v in headers.items()]

    def websocket_cookie(self, kernel_id: str) -> Optional[str]:
        """Return this client's cookies for the handshake (never a global jar)."""
        # Let the cookie jar apply its own domain, path and secure rules to
        # the HTTP twin of the WebSocket URL.
        import requests  # on first use, see _http
        from requests.cookies import get_cookie_header

        request = requests.Request("GET", self.url(f"api/kernels/{kernel_id}/channels"))
        header: Optional[str] = get_cookie_header(  # type: ignore[no-untyped-call]
            self.http.session.cookies, request.prepare()
        )
        return header
