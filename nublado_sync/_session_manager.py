"""Opening a kernel session on a server, and always cleaning it up."""

from __future__ import annotations

import datetime
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Type, Union

from ._acks import as_ack_policy
from ._arguments import check_duration, check_http_url, check_message_size, check_token
from ._deadline import Deadline
from ._exceptions import (
    KernelGoneError,
    NubladoError,
    NubladoTimeoutError,
    NubladoUsageError,
    NubladoWebError,
    NubladoWebSocketError,
)
from ._http import HTTPSession, check_proxies
from ._interrupts import deferred_interrupts
from ._lab_api import LabAPI
from ._logging import Logger, default_logger
from ._reasons import WEBSOCKET_OPEN_TIMED_OUT, one_line, transport_failure
from ._reconnect import DEFAULT_RECONNECT, ReconnectPolicy, check_reconnect_policy
from ._redact import redact_url
from ._retry import RetryPolicy
from ._wire import V1_SUBPROTOCOL

if TYPE_CHECKING:
    import websocket

    from ._session import JupyterLabSession

__all__ = ["JupyterLabSessionManager", "open_lab_session"]


# How long deleting a session keeps trying through server errors, and the
# pause between tries.
_DELETE_RETRY = datetime.timedelta(seconds=15)
_DELETE_PAUSE = 0.5


# The `JupyterLabSession` options a manager passes on.
_SESSION_OPTIONS = frozenset(
    {"keepalive_interval", "heartbeat_interval", "heartbeat_timeout", "prompt_acks", "reconnect"}
)
# Longest single WebSocket handshake before the lab is asked whether the
# kernel is still there (a third of the open timeout when that is less).
_HANDSHAKE_PART = 20.0
# Upgrade answers of a proxy or ingress whose backend is not there yet.
_PASSING_STATUSES = frozenset({502, 503, 504})


def _check_session_options(options: Mapping[str, Any], user: str) -> Optional[ReconnectPolicy]:
    """Refuse bad session options before anything is asked of the server.

    Returns the reconnect policy, which opening the WebSocket uses too.
    """
    unknown = sorted(set(options) - _SESSION_OPTIONS)
    if unknown:
        raise NubladoUsageError(
            f"Unknown session option(s): {', '.join(unknown)}; the options are"
            f" {', '.join(sorted(_SESSION_OPTIONS))}",
            user,
        )
    for name in ("keepalive_interval", "heartbeat_interval", "heartbeat_timeout"):
        if name in options:
            check_duration(options[name], name, user, optional=True)
    as_ack_policy(options.get("prompt_acks", True), user)
    return check_reconnect_policy(options.get("reconnect", DEFAULT_RECONNECT), user)


class _OpenFailedError(NubladoWebSocketError):
    """The WebSocket could not be opened for a reason that may pass."""


class _SubprotocolRefusedError(Exception):
    """The handshake answer did not confirm the offered subprotocol."""


class JupyterLabSessionManager:
    """Context manager for one kernel session on a Jupyter server.

    On entry it creates a ``console`` session (a new kernel) through the
    REST API, opens the kernel WebSocket and waits until the kernel answers.
    On exit, whatever happened (the WebSocket failing to open, an exception
    or ``KeyboardInterrupt`` in the body, a timeout), it closes the socket
    and deletes the session, which shuts the kernel down.

    Made by `NubladoClient.lab_session` or `open_lab_session`.

    Parameters
    ----------
    username
        User the session is for.
    api
        REST access to the server.
    close_http
        Close ``api``'s HTTP session on exit (when the manager made it).
    kernel_name
        Kernel to start; the server's default when `None`.
    notebook_name
        Name recorded with the session on the server.
    max_websocket_size
        Largest message accepted from the kernel, in bytes; `None` for no
        limit.
    websocket_open_timeout
        Time allowed to open the WebSocket and for the kernel to answer.
    logger
        Logger to use.
    session_options
        Further keyword arguments for `JupyterLabSession`
        (``keepalive_interval``, ``heartbeat_interval``,
        ``heartbeat_timeout``, ``prompt_acks``, ``reconnect``); checked at
        once.

    Raises
    ------
    NubladoUsageError
        ``max_websocket_size`` is not an int of at least 64 KiB,
        ``websocket_open_timeout`` is not a positive `datetime.timedelta`,
        or a session option is unknown or invalid.
    """

    def __init__(
        self,
        *,
        username: str,
        api: LabAPI,
        kernel_name: Optional[str] = None,
        notebook_name: Optional[str] = None,
        max_websocket_size: Optional[int] = None,
        websocket_open_timeout: datetime.timedelta = datetime.timedelta(seconds=60),
        logger: Optional[Logger] = None,
        close_http: bool = False,
        **session_options: Any,
    ) -> None:
        check_message_size(max_websocket_size, "max_websocket_size", username)
        check_duration(websocket_open_timeout, "websocket_open_timeout", username)
        self.username = username
        self._close_http = close_http
        self._api = api
        self._kernel_name = kernel_name
        self._notebook_name = notebook_name
        self._max_size = max_websocket_size
        self._open_timeout = websocket_open_timeout
        self._logger = logger or default_logger()
        self._reconnect = _check_session_options(session_options, username)
        self._session_options = session_options
        self._session_id: Optional[str] = None
        self._kernel_id: Optional[str] = None
        self._session: Optional[JupyterLabSession] = None
        # The WebSocket's ``session_id``, kept for the session's lifetime:
        # stock jupyter_server replays what the kernel sent while the socket
        # was down only to a connection with the same one.
        self._client_id = uuid.uuid4().hex

    def __repr__(self) -> str:
        return (
            f"<JupyterLabSessionManager user={self.username!r}"
            f" url={redact_url(self._api.base_url)!r} session_id={self._session_id!r}>"
        )

    @property
    def session_id(self) -> Optional[str]:
        """Id of the server session while one is open."""
        return self._session_id

    @property
    def kernel_id(self) -> Optional[str]:
        """Id of the session's kernel while one is open."""
        return self._kernel_id

    def __enter__(self) -> JupyterLabSession:
        """Create the session, open its WebSocket and wait for the kernel.

        Returns
        -------
        JupyterLabSession
            The open session.

        Raises
        ------
        NubladoWebError
            Creating the session failed.
        NubladoWebSocketError
            The WebSocket did not open.
        NubladoTimeoutError
            The WebSocket or the kernel took longer than
            ``websocket_open_timeout``.
        NubladoUsageError
            The manager is already open.
        """
        if self._session_id is not None:
            raise NubladoUsageError("This session manager is already open", self.username)
        deadline = Deadline(self._open_timeout)
        cancellation = self._api.http.cancellation
        cancellation.register(self)
        try:
            # A Ctrl-C that lost the answer would leave the new session and
            # its kernel on the server: it is held until the ids are known.
            with deferred_interrupts(self._logger, "creating the lab session"):
                self._session_id, self._kernel_id = self._api.create_session(
                    kernel_name=self._kernel_name, notebook_name=self._notebook_name
                )
            log = self._logger.bind(user=self.username, session=self._session_id)
            log.debug("Created lab session", kernel=self._kernel_id)
            # The kernel protocol modules (and websocket-client, in
            # _handshake) load while the new kernel starts, not before the
            # request that starts it: a cold command-line run sees its
            # first output sooner.
            from ._session import JupyterLabSession

            ws = self._connect_first(deadline)
            self._session = JupyterLabSession(
                username=self.username,
                session_id=self._session_id,
                socket=ws,
                logger=self._logger,
                max_message_size=self._max_size,
                _client_id=self._client_id,
                _opener=self._reopen,
                _kernel_check=self._kernel_exists,
                **self._session_options,
            )
            # A cancellation that came while the socket opened found no
            # session to abort; from here on it finds this one.
            cancellation.check()
            remaining = deadline.remaining()
            if not remaining:
                raise NubladoTimeoutError(WEBSOCKET_OPEN_TIMED_OUT, self.username)
            self._session.wait_until_ready(datetime.timedelta(seconds=remaining))
        except BaseException:
            self._cleanup()
            raise
        return self._session

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        """Close the WebSocket and delete the session.

        Raises
        ------
        NubladoWebError
            Deleting the session failed and no other exception is in flight
            (one in flight is never replaced; the failure is logged).
        """
        try:
            self._cleanup()
        except NubladoError as e:
            if exc is None:
                raise
            # One line: the failure in flight is the news. The traceback is
            # for debugging only.
            self._logger.warning("Could not delete lab session", error=one_line(str(e)))
            self._logger.debug("Session delete failure", exc_info=True)

    def _kernel_exists(self, timeout: float) -> Optional[bool]:
        # For the session's heartbeat: whether the lab still has the kernel.
        assert self._kernel_id is not None
        return self._api.kernel_exists(self._kernel_id, timeout=timeout)

    def _check_kernel_exists(
        self, refusal: NubladoError, deadline: Deadline, *, starting: bool = False
    ) -> None:
        # A 404 from the lab itself means the kernel is gone, and no retry
        # can help; from a proxy between restarts it means nothing yet.
        assert self._kernel_id is not None
        if self._api.kernel_exists(self._kernel_id, timeout=deadline.remaining()) is False:
            how = (
                "it died while starting (on a busy lab, a kernel that fails to start is"
                " removed); try again, or start fewer kernels at once"
                if starting
                else "it died or was shut down (a kernel that fails to start on a busy lab is"
                " removed). Open a new session"
            )
            raise KernelGoneError(
                f"The lab no longer has this session's kernel ({self._kernel_id}): {how}",
                self.username,
                code=404,
            ) from refusal

    def _connect_first(self, deadline: Deadline) -> websocket.WebSocket:
        # A lab just spawned, or a proxy restarting, may refuse the first
        # upgrade for a moment: tried again as a dropped socket would be.
        policy = self._reconnect
        attempt = 1
        while True:
            try:
                return self._connect_or_find_kernel_gone(deadline)
            except NubladoWebSocketError as e:
                passing = isinstance(e, _OpenFailedError) or e.code in _PASSING_STATUSES
                if policy is None or not passing or attempt >= policy.max_attempts:
                    raise
                attempt += 1
                pause = policy.delay(attempt)
                remaining = deadline.remaining()
                if remaining is not None and remaining <= pause:
                    raise
                self._logger.warning(
                    "Opening the kernel WebSocket failed, trying again",
                    attempt=attempt,
                    max_attempts=policy.max_attempts,
                    error=e.message,
                )
                time.sleep(pause)

    def _connect_or_find_kernel_gone(self, deadline: Deadline) -> websocket.WebSocket:
        # jupyter_server answers the upgrade only once the kernel answered
        # its kernel_info_request, and waits 60 s for a kernel that died
        # while starting (on a crowded lab, a port taken by another new
        # kernel). So a handshake that takes long is cut after a part of
        # the open timeout, and the lab asked whether it still has the
        # kernel: if not, that is the error; if so, a new handshake goes on.
        total = self._open_timeout.total_seconds()
        part = min(_HANDSHAKE_PART, total / 3)
        while True:
            remaining = deadline.remaining()
            if remaining is not None and remaining <= part:
                return self._connect(deadline)
            try:
                return self._connect(Deadline(datetime.timedelta(seconds=part)))
            except NubladoTimeoutError as e:
                self._check_kernel_exists(e, deadline, starting=True)
                self._logger.info("Kernel WebSocket not answered yet, asking again")

    def _reopen(self, timeout: Optional[float]) -> websocket.WebSocket:
        # For the session's reconnects: the same kernel, the same client id,
        # within the open timeout and whatever the caller's deadline leaves.
        limit = self._open_timeout.total_seconds()
        seconds = limit if timeout is None else min(timeout, limit)
        return self._connect(Deadline(datetime.timedelta(seconds=seconds)))

    def _connect(self, deadline: Deadline) -> websocket.WebSocket:
        try:
            return self._negotiate(deadline)
        except NubladoWebSocketError as e:
            if e.code == 404:
                self._check_kernel_exists(e, deadline)
            # An expired lab login fails the upgrade's XSRF or login check,
            # or redirects it into OAuth; log in again once, as for REST.
            if e.code not in (302, 403) or not self._api.relogin():
                raise
            return self._negotiate(deadline)

    def _negotiate(self, deadline: Deadline) -> websocket.WebSocket:
        try:
            return self._handshake(deadline, [V1_SUBPROTOCOL])
        except _SubprotocolRefusedError:
            # websocket-client fails a handshake whose answer lacks the
            # offered subprotocol; such a server speaks the legacy protocol.
            self._logger.info("Server refused the v1 kernel protocol, using legacy JSON")
            try:
                return self._handshake(deadline, None)
            except _SubprotocolRefusedError as e:
                raise NubladoWebSocketError(
                    "Invalid WebSocket handshake answer", self.username
                ) from e

    def _handshake(
        self, deadline: Deadline, subprotocols: Optional[List[str]]
    ) -> websocket.WebSocket:
        # Imported on first use: `import nublado_sync` stays cheap for cold starts.
        import websocket

        from ._transport import open_websocket

        assert self._kernel_id is not None
        url = self._api.channels_url(self._kernel_id, self._client_id)
        timeout = deadline.remaining()
        if timeout == 0:
            raise NubladoTimeoutError(WEBSOCKET_OPEN_TIMED_OUT, self.username)
        try:
            return open_websocket(
                url,
                timeout=timeout,
                subprotocols=subprotocols,
                header=self._api.websocket_headers(),
                cookie=self._api.websocket_cookie(self._kernel_id),
                # A redirected handshake would re-send the token to wherever
                # it points; the hub client follows redirects itself.
                redirect_limit=0,
                # Text frames (legacy protocol) are decoded, and so checked,
                # by the session; websocket-client's own check is pure
                # Python and costs about a second per 5 MB.
                skip_utf8_validation=True,
                sslopt=self._api.http.websocket_sslopt(),
                # The forward proxy the HTTP requests use, if any.
                **self._api.http.websocket_proxy_options(url),
            )
        except websocket.WebSocketTimeoutException as e:
            raise NubladoTimeoutError(WEBSOCKET_OPEN_TIMED_OUT, self.username) from e
        except websocket.WebSocketBadStatusException as e:
            body = e.resp_body.decode(errors="replace") if e.resp_body else None
            raise NubladoWebSocketError(
                f"WebSocket upgrade refused with status {e.status_code}",
                self.username,
                body=self._api.http.redact(body) if body else None,
                code=e.status_code,
            ) from None
        except websocket.WebSocketException as e:
            if "redirect" in str(e).lower():
                # Redirects are not followed (they would carry the token);
                # a lab redirects the upgrade when its login has expired.
                raise NubladoWebSocketError(
                    "WebSocket upgrade was redirected", self.username, code=302
                ) from None
            if type(e) is websocket.WebSocketException and subprotocols:
                raise _SubprotocolRefusedError from None
            raise self._open_error(e) from None
        except TimeoutError as e:
            # A TLS handshake that never completes times out as a socket.
            raise NubladoTimeoutError(WEBSOCKET_OPEN_TIMED_OUT, self.username) from e
        except (OSError, ValueError) as e:
            raise self._open_error(e) from None

    def _open_error(self, e: Exception) -> _OpenFailedError:
        # In words, as for HTTP; the library's own text goes to the debug log.
        self._logger.debug(
            "WebSocket open failed", error=self._api.http.redact(f"{type(e).__name__}: {e}")
        )
        words = transport_failure(e, redact_url(self._api.base_url))
        return _OpenFailedError(
            f"Cannot open WebSocket: {self._api.http.redact(words)}", self.username
        )

    def cancel_in_flight(self, error: NubladoError) -> None:
        """Make the session's call in flight raise ``error`` (a cancellation).

        Called from another thread by the client's cancellation; the
        session is then closed and deleted on the way out, as usual.
        """
        session = self._session
        if session is not None:
            session._abort(error)

    def _cleanup(self) -> None:
        self._client_id = uuid.uuid4().hex
        session, self._session = self._session, None
        session_id, self._session_id = self._session_id, None
        kernel_id, self._kernel_id = self._kernel_id, None
        cancellation = self._api.http.cancellation
        if session is not None:
            session.close()
        try:
            # Deleting goes through even when the client was cancelled.
            with cancellation.cleanup():
                self._delete(session_id, kernel_id)
        finally:
            cancellation.unregister(self)
            if self._close_http:
                self._api.http.close()

    def _delete(self, session_id: Optional[str], kernel_id: Optional[str]) -> None:
        if session_id is None:
            return
        # A server restarting the kernel (after it died) answers 5xx for a
        # few seconds; keep trying for a while rather than leave it behind.
        # Connection failures and 502-504 (a proxy restarting) are retried
        # inside each request, by the client's retry policy.
        retry = Deadline(_DELETE_RETRY)
        while True:
            try:
                self._delete_once(session_id, kernel_id)
                break
            except NubladoWebError as e:
                if e.status is None or e.status < 500 or retry.expired():
                    raise
                self._logger.debug("Session delete failed, retrying", status=e.status)
                time.sleep(retry.bound(_DELETE_PAUSE))
        self._logger.debug("Deleted lab session", user=self.username, session=session_id)

    def _delete_once(self, session_id: str, kernel_id: Optional[str]) -> None:
        try:
            self._api.delete_session(session_id)
        except NubladoError:
            # Some servers cannot delete a session whose kernel is in a bad
            # state; deleting the kernel removes both.
            if kernel_id is None:
                raise
            self._api.delete_kernel(kernel_id)


def open_lab_session(
    url: str,
    token: str,
    *,
    username: Optional[str] = None,
    kernel_name: Optional[str] = None,
    notebook_name: Optional[str] = None,
    timeout: datetime.timedelta = datetime.timedelta(seconds=30),
    websocket_open_timeout: datetime.timedelta = datetime.timedelta(seconds=60),
    max_websocket_size: Optional[int] = None,
    verify: Union[bool, str] = True,
    logger: Optional[Logger] = None,
    retry: Optional[RetryPolicy] = None,
    proxies: Optional[Mapping[str, str]] = None,
    **session_options: Any,
) -> JupyterLabSessionManager:
    """Open a kernel session on any Jupyter server, without a hub.

    Use it as a context manager::

        with open_lab_session("http://127.0.0.1:8888/", token) as session:
            print(session.run_python("print(6 * 7)"))

    Parameters
    ----------
    url
        Base URL of the Jupyter server (for a lab behind JupyterHub,
        ``https://host/user/<name>/``).
    token
        Token accepted by the server, sent as ``Authorization: Bearer``.
    username
        Name used in logs, exceptions and message headers.
    kernel_name
        Kernel to start; the server's default when `None`.
    notebook_name
        Name recorded with the session on the server.
    timeout
        Timeout of each HTTP request.
    websocket_open_timeout
        Time allowed to open the WebSocket and for the kernel to answer.
    max_websocket_size
        Largest message accepted from the kernel, in bytes.
    verify
        TLS verification: `True` (the default), a CA bundle path, or
        `False` to turn it off.
    logger
        Logger to use.
    retry
        How requests that failed for a passing reason are tried again;
        `RetryPolicy` ``()`` by default, `RetryPolicy.off` to fail at once.
    proxies
        Forward proxies for HTTP and the WebSocket alike, by URL scheme
        (``{"https": "http://proxy:3128"}``, ``http``, ``all``), with an
        optional ``no_proxy`` entry (comma-separated hosts); they replace
        the environment's ``HTTPS_PROXY``, ``HTTP_PROXY`` and ``NO_PROXY``,
        and ``{}`` means no proxy at all. `None` (the default) uses the
        environment's.
    **session_options
        Passed to `JupyterLabSession` (``keepalive_interval``,
        ``heartbeat_interval``, ``heartbeat_timeout``, ``prompt_acks``,
        ``reconnect``); checked at once.

    Returns
    -------
    JupyterLabSessionManager
        Context manager that yields the `JupyterLabSession`.

    Raises
    ------
    NubladoUsageError
        An argument is invalid: a URL that is not http(s), a token too short
        to be real (under 8 characters) or holding white space, a timeout
        that is not a positive `datetime.timedelta`, a
        ``max_websocket_size`` under 64 KiB, a ``retry`` that is not a
        `RetryPolicy`, ``proxies`` that are not a mapping of strings to
        proxy URLs, or a session option unknown or invalid.
    """
    check_http_url(url, "url", username)
    check_token(token, username)
    check_duration(timeout, "timeout", username)
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise NubladoUsageError("retry must be a RetryPolicy", username)
    check_proxies(proxies, username)
    name = username or "jupyter"
    logger = logger or default_logger()
    http = HTTPSession(
        token=token,
        user=name,
        timeout=timeout.total_seconds(),
        verify=verify,
        logger=logger,
        retry=retry,
        proxies=proxies,
    )
    return JupyterLabSessionManager(
        username=name,
        api=LabAPI(http, url),
        kernel_name=kernel_name,
        notebook_name=notebook_name,
        max_websocket_size=max_websocket_size,
        websocket_open_timeout=websocket_open_timeout,
        logger=logger,
        close_http=True,
        **session_options,
    )
