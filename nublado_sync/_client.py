"""NubladoClient: the hub and lab flow of one user, step by step."""

from __future__ import annotations

import datetime
import time
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Mapping,
    Optional,
    Tuple,
    Type,
    Union,
)

from ._arguments import check_duration, check_http_url, check_token
from ._deadline import Deadline
from ._discovery import DiscoveryClient
from ._exceptions import (
    NubladoCancelledError,
    NubladoError,
    NubladoProtocolError,
    NubladoSpawnError,
    NubladoSpawnFormError,
    NubladoSpawnTimeoutError,
    NubladoTimeoutError,
    NubladoUsageError,
    NubladoWebError,
)
from ._http import HTTPSession, URLSpace, check_proxies, is_transient, set_read_timeout
from ._images import NubladoImage
from ._lab_api import LabAPI
from ._logging import Logger, default_logger
from ._models import NotebookExecutionError, NotebookExecutionResult, SpawnProgressMessage
from ._reasons import server_message
from ._retry import RETRY_STATUSES, RetryPolicy
from ._session_manager import JupyterLabSessionManager
from ._sse import SSEParser, parse_progress_event

if TYPE_CHECKING:
    import requests

__all__ = ["NubladoClient"]

_EVENT_STREAM = "text/event-stream"
# The execution extension answers only when the whole notebook has run.
_NOTEBOOK_READ_TIMEOUT = datetime.timedelta(hours=1)
# How long a failed spawn form waits for the hub's reason in the progress stream.
_FAILED_SPAWN_REASON = datetime.timedelta(seconds=5)
# How often wait_for_lab_stopped looks at the hub's record of the lab.
_STOP_POLL = 0.5


class NubladoClient:
    """Client for one user's JupyterHub (Nublado) and JupyterLab.

    Each client has its own cookie jar and connections, so clients for
    several users can run side by side. Nothing touches the network until a
    method is called. Use it as a context manager, or call `close`.

    Parameters
    ----------
    username
        User to act as.
    token
        Token for that user, sent as ``Authorization: Bearer`` on every
        request. It never appears in a URL, a log line, an exception or a
        ``repr``.
    hub_url
        Base URL of the hub, such as ``https://data.example.org/nb``. When
        omitted, it comes from service discovery.
    discovery_client
        Service discovery to use when ``hub_url`` is omitted; one reading
        ``REPERTOIRE_BASE_URL`` by default.
    logger
        Logger to use.
    timeout
        Timeout of each HTTP request (connect, and each read).
    verify
        TLS verification: `True` (the default: requests' choice, which is
        ``REQUESTS_CA_BUNDLE`` or ``CURL_CA_BUNDLE`` when set, else
        certifi's bundle), or the path of a CA bundle for servers with a
        private certificate authority. HTTP and the kernel WebSocket trust
        the same certificates.
    retry
        How requests that failed for a passing reason (connection refused
        or reset, 502, 503, 504) are tried again; `RetryPolicy` ``()`` by
        default, `RetryPolicy.off` to fail at once.
    proxies
        Forward proxies for HTTP and the kernel WebSocket alike, by URL
        scheme (``{"https": "http://proxy:3128"}``, ``http``, ``all``),
        with an optional ``no_proxy`` entry (comma-separated hosts); they
        replace the environment's ``HTTPS_PROXY``, ``HTTP_PROXY`` and
        ``NO_PROXY``, and ``{}`` means no proxy at all. `None` (the
        default) uses the environment's. The client's own service
        discovery uses the same ``retry`` and ``proxies``.

    Raises
    ------
    NubladoUsageError
        An argument is invalid: no username, a token too short to be real
        (under 8 characters) or holding white space, a ``timeout`` that is
        not a positive `datetime.timedelta`, or a ``hub_url`` that is not
        http(s).
    """

    def __init__(
        self,
        username: str,
        token: str,
        *,
        hub_url: Optional[str] = None,
        discovery_client: Optional[DiscoveryClient] = None,
        logger: Optional[Logger] = None,
        timeout: datetime.timedelta = datetime.timedelta(seconds=30),
        verify: Union[bool, str] = True,
        retry: Optional[RetryPolicy] = None,
        proxies: Optional[Mapping[str, str]] = None,
    ) -> None:
        if not username or not isinstance(username, str):
            raise NubladoUsageError("A username is required")
        check_token(token, username)
        check_duration(timeout, "timeout", username)
        if hub_url is not None:
            check_http_url(hub_url, "hub_url", username)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise NubladoUsageError("retry must be a RetryPolicy", username)
        check_proxies(proxies, username)
        self.username = username
        self._logger = (logger or default_logger()).bind(user=username)
        self._hub_url = hub_url.rstrip("/") + "/" if hub_url else None
        self._discovery = discovery_client or DiscoveryClient(
            timeout=timeout.total_seconds(),
            verify=verify,
            logger=self._logger,
            retry=retry,
            proxies=proxies,
        )
        self._http = HTTPSession(
            token=token,
            user=username,
            timeout=timeout.total_seconds(),
            verify=verify,
            logger=self._logger,
            retry=retry,
            proxies=proxies,
        )

    def __repr__(self) -> str:
        return f"NubladoClient(username={self.username!r}, hub_url={self._hub_url!r})"

    def __enter__(self) -> NubladoClient:
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the client: end its calls in flight, and its connections.

        Safe from any thread and more than once. A call in flight in
        another thread ends as with `cancel`; later calls raise
        `NubladoCancelledError`. Labs are not touched.
        """
        self._http.cancellation.cancel("The client was closed (NubladoClient.close)")
        self._http.close()

    def cancel(self) -> None:
        """Stop every call of this client in flight, from another thread.

        The blocking call (an HTTP request such as `run_notebook`, the
        spawn's progress stream, `wait_for_lab_stopped`, code running in a
        session of `lab_session`) raises `NubladoCancelledError` in its own
        thread at once, after the usual clean-up: a lab session being used
        or created is deleted, which shuts its kernel down. Every later call
        raises it too: a cancelled client is finished, like a cancelled
        task; close it and make a new one to go on. What the lab was asked
        to do before (a spawn, a notebook run by the lab's extension) is
        not undone.

        Safe to call from any thread, and more than once.
        """
        self._http.cancellation.cancel("The call was cancelled (NubladoClient.cancel)")

    # URLs

    @property
    def hub_url(self) -> str:
        """Base URL of the hub, ending in ``/``.

        Raises
        ------
        NubladoDiscoveryError
            It had to come from service discovery, which failed.
        """
        if self._hub_url is None:
            self._hub_url = self._discovery.url_for_ui("nublado") + "/"
        return self._hub_url

    @property
    def _space(self) -> URLSpace:
        if self._http.space is None:
            self._http.space = URLSpace(self.hub_url, self.username)
        return self._http.space

    def _hub(self, path: str) -> str:
        return self._space.hub_url + path

    @property
    def _home(self) -> str:
        return self._hub("hub/home")

    @property
    def lab_url(self) -> str:
        """Base URL of the user's lab (``.../user/<name>/``).

        With per-user subdomains the lab host is known only after the lab
        login (`auth_to_lab`, or the first lab call); before, this is the
        hub's host.

        Raises
        ------
        NubladoDiscoveryError
            The hub URL had to come from service discovery, which failed.
        """
        return self._space.lab_url

    # The hub

    def auth_to_hub(self) -> None:
        """Log in to the hub.

        Throws away cookies, XSRF tokens and the learned lab host first, so
        it also starts a fresh login.

        Raises
        ------
        NubladoWebError
            The hub refused the token or failed, or the URL is not a hub's
            (it has no ``hub/home`` page).
        NubladoRedirectError
            The login redirected outside the hub or looped.
        NubladoDiscoveryError
            The hub URL had to come from service discovery, which failed.
        """
        self._http.reset()
        try:
            self._http.fetch("GET", self._home, navigate=True, ok=(200,))
        except NubladoWebError as e:
            if e.status != 404:
                raise
            # Every JupyterHub has this page: the URL is not a hub's (a
            # lab's, a plain Jupyter server's, or a wrong path).
            raise NubladoWebError(
                f"{self.hub_url} does not look like a JupyterHub: GET hub/home answered 404",
                self.username,
                body=e.body,
                method=e.method,
                status=e.status,
                url=e.url,
            ) from None
        if "hub" not in self._http.xsrf:
            self._logger.debug("Hub login set no XSRF cookie")
        self._logger.debug("Logged in to the hub")

    def _user_model(self) -> Dict[str, Any]:
        response = self._http.fetch(
            "GET", self._hub(f"hub/api/users/{self.username}"), referer=self._home, ok=(200,)
        )
        try:
            model = response.json()
        except ValueError as e:
            raise NubladoProtocolError("Hub user model is not JSON", self.username) from e
        if not isinstance(model, dict):
            raise NubladoProtocolError("Hub user model is not an object", self.username)
        return model

    def is_lab_stopped(self, *, log_running: bool = False) -> bool:
        """Tell whether the user's lab is stopped (has no server at all).

        Parameters
        ----------
        log_running
            Log a warning with the server's record when it is running.

        Returns
        -------
        bool
            `True` when the hub lists no server for the user.

        Raises
        ------
        NubladoWebError
            The hub refused or failed.
        NubladoProtocolError
            The hub's answer is not a user record.
        """
        servers = self._user_model().get("servers") or {}
        if servers and log_running:
            self._logger.warning("Lab is still running", servers=servers)
        return not servers

    def spawn_lab(self, config: NubladoImage) -> None:
        """Ask the hub to start the user's lab; does not wait for it.

        The form is never sent twice blindly: when its answer is lost (a
        connection reset, a 502, 503 or 504 from a proxy or ingress), the
        hub's record of the lab says whether the spawn was accepted, and the
        form is sent again only if it was not, as the retry policy allows.

        Parameters
        ----------
        config
            Which image and size to start.

        Raises
        ------
        NubladoUsageError
            ``config`` is not an image choice.
        NubladoSpawnFormError
            The spawn failed at once: the hub answered the form with a
            server error other than 502, 503 or 504. Both a
            `NubladoSpawnError` and a `NubladoWebError`; the message gives
            the hub's reason.
        NubladoWebError
            The hub refused or failed, or stayed unreachable or unavailable
            (502, 503, 504) for as long as the retry policy allows.
        NubladoRedirectError
            The hub redirected outside the URL space.
        """
        if not isinstance(config, NubladoImage):
            raise NubladoUsageError("spawn_lab takes a NubladoImage", self.username)
        policy = self._http.retry
        deadline = Deadline(datetime.timedelta(seconds=policy.request_deadline(self._http.timeout)))
        retries = 0
        error = _transient_failure(lambda: self._post_spawn_form(config))
        while error is not None:
            retries += 1
            pause = policy.pause(retries)
            remaining = deadline.remaining()
            if retries > policy.retries or (remaining is not None and pause >= remaining):
                raise error
            self._logger.info(
                "Spawn form failed, checking the lab before sending it again",
                error=str(error).splitlines()[0],
                retry=retries,
                pause=round(pause, 3),
            )
            self._pause(pause)
            # The hub may have started the spawn before its answer was lost.
            try:
                stopped = self.is_lab_stopped()
            except NubladoWebError as e:
                if not is_transient(e):
                    raise
                error = e
                continue
            if not stopped:
                self._logger.info("The hub accepted the spawn despite the failed answer")
                return
            error = _transient_failure(lambda: self._post_spawn_form(config))

    def _post_spawn_form(self, config: NubladoImage) -> None:
        spawn = self._hub("hub/spawn")
        self._http.fetch("GET", spawn, navigate=True, ok=(200,))
        form = config.to_spawn_form()
        if "hub" in self._http.xsrf:
            form["_xsrf"] = self._http.xsrf["hub"]
        # Not followed: the answer points at the progress page, or straight
        # at the lab when it started fast, and either means it was accepted.
        started_at = datetime.datetime.now(tz=datetime.timezone.utc)
        response = self._http.fetch(
            "POST", spawn, data=form, referer=spawn, follow=False, ok=range(100, 600)
        )
        status = response.status_code
        if status >= 500 and status not in RETRY_STATUSES:
            # A spawn that fails within about a second fails the form POST
            # itself: a spawn failure and a web fault at once. 502-504 come
            # from a proxy or ingress in front of the hub: web errors, which
            # spawn_lab may send again.
            raise self._spawn_form_error(response, spawn, started_at)
        if status not in (200, 302, 303):
            raise self._http.status_error(response, started_at)
        response.close()
        self._logger.info("Requested lab spawn", form=config.to_spawn_form())

    def _spawn_form_error(
        self, response: requests.Response, spawn: str, started_at: datetime.datetime
    ) -> NubladoSpawnFormError:
        # A spawn that fails within about a second fails the form POST
        # itself: a spawn failure and a web fault at once. The page says
        # only "Unhandled error starting server"; the reason is in the
        # progress stream's failed event, read briefly here.
        url = response.url or spawn
        page = self._http.redact(response.text)
        head = f"the hub answered POST {url} with status {response.status_code}"
        log: List[str] = []
        try:
            for message in self._progress(Deadline(_FAILED_SPAWN_REASON)):
                log.append(message.message)
        except NubladoCancelledError:
            raise
        except NubladoError as e:
            self._logger.debug("No spawn progress after a failed spawn form", error=str(e))
        if log and log[-1]:
            summary = f"{log[-1]} ({head})"
        else:
            reason = server_message(page, response.headers.get("Content-Type", "")) or ""
            log = [reason] if reason else []
            summary = f"Spawn failed: {head}" + (f": {reason}" if reason else "")
        return NubladoSpawnFormError(
            summary,
            log,
            self.username,
            body=page,
            method="POST",
            started_at=started_at,
            status=response.status_code,
            url=url,
        )

    def watch_spawn_progress(self) -> Iterator[SpawnProgressMessage]:
        """Yield the spawn's progress events as the hub sends them.

        The generator ends after the event that says the lab is ready or
        that the spawn failed, or when the hub closes the stream. A stream
        that breaks (the hub or its proxy restarted) is opened again, as
        the retry policy allows; events the hub sends again are not
        repeated.

        Yields
        ------
        SpawnProgressMessage
            Each progress event.

        Raises
        ------
        NubladoSpawnError
            The stream broke and the hub no longer has the spawn (a hub
            restart stops the spawns it ran).
        NubladoWebError
            The hub refused or failed, or the stream broke and could not be
            opened again.
        NubladoProtocolError
            The answer is not an event stream, or an event is malformed.
        """
        try:
            yield from self._progress(Deadline(None))
        except _SpawnGoneError as e:
            raise NubladoSpawnError(str(e), [], self.username) from None

    def _progress(self, deadline: Deadline, *, log: bool = True) -> Iterator[SpawnProgressMessage]:
        # Each stream replays the spawn's events from its start (Nublado's
        # and the test hub's do); on a reopened stream those already
        # yielded are recognised by their order and content, and skipped.
        seen: List[Tuple[int, str]] = []
        started = time.monotonic()
        policy = self._http.retry
        failures = 0
        reopened = False
        while True:
            skipping, index = reopened, 0
            try:
                for message in self._stream(deadline, reopened):
                    key = (message.progress, message.message)
                    if skipping and index < len(seen) and seen[index] == key:
                        index += 1
                        continue
                    skipping, failures = False, 0
                    seen.append(key)
                    if log:
                        self._log_progress(message, started)
                    yield message
                    if message.ready or message.failed:
                        return
            except NubladoWebError as e:
                if not is_transient(e) or policy.retries == 0:
                    raise
                error = e
            else:
                # The hub closed the stream: its choice, not a break.
                return
            # The stream broke: the hub or a proxy in front of it restarted
            # or dropped it. Carry on until the deadline, or, without one,
            # as many times in a row as the policy retries.
            failures += 1
            pause = policy.pause(failures)
            remaining = deadline.remaining()
            if remaining is None and failures > policy.retries:
                raise error
            if remaining is not None and pause >= remaining:
                raise NubladoTimeoutError(
                    "Timed out waiting for spawn progress", self.username
                ) from None
            self._logger.info(
                "Spawn progress stream broke, opening it again",
                error=str(error).splitlines()[0],
                retry=failures,
                pause=round(pause, 3),
            )
            self._pause(pause)
            reopened = True

    def _log_progress(self, message: SpawnProgressMessage, started: float) -> None:
        # Upstream's words, at info level: consumers' logs (and their tests)
        # look for them.
        elapsed = int(time.monotonic() - started)
        status = "complete" if message.ready else "in progress"
        self._logger.info(
            f"Spawn {status} ({elapsed}s elapsed): {message.message}",
            elapsed=elapsed,
            status=status,
            progress=message.progress,
        )

    def _pause(self, seconds: float) -> None:
        # A cancellation (NubladoClient.cancel) ends a pause at once.
        self._http.cancellation.event.wait(seconds)
        self._http.cancellation.check()

    def _stream(self, deadline: Deadline, reopened: bool) -> Iterator[SpawnProgressMessage]:
        url = self._hub(f"hub/api/users/{self.username}/server/progress")
        try:
            response = self._http.fetch(
                "GET",
                url,
                referer=self._home,
                headers={"Accept": _EVENT_STREAM},
                ok=(200,),
                stream=True,
                timeout=deadline.bound(self._http.timeout),
                deadline=deadline.remaining(),
            )
        except NubladoWebError as e:
            if deadline.expired():
                raise NubladoTimeoutError(
                    "Timed out waiting for spawn progress", self.username
                ) from None
            if reopened and e.status in (400, 404):
                # The hub answers 400 when the lab is neither starting nor
                # running nor failed, and 404 when it has no server at all:
                # it forgot the spawn, as a restarted hub does.
                raise _SpawnGoneError(
                    "The spawn ended without a result: the hub restarted or"
                    " stopped the lab while it was starting"
                ) from None
            raise
        with response:
            content_type = response.headers.get("Content-Type", "")
            if not content_type.startswith(_EVENT_STREAM):
                raise NubladoProtocolError(
                    f"Spawn progress is {content_type or 'untyped'}, not an event stream",
                    self.username,
                )
            parser = SSEParser()
            for chunk in self._chunks(response, deadline):
                for data in parser.feed(chunk):
                    yield parse_progress_event(data)

    def _chunks(self, response: requests.Response, deadline: Deadline) -> Iterator[bytes]:
        raw = response.raw
        try:
            while True:
                if deadline.expired():
                    raise NubladoTimeoutError("Timed out waiting for spawn progress", self.username)
                set_read_timeout(response, deadline.bound(self._http.timeout))
                chunk = raw.read1(65536) if hasattr(raw, "read1") else raw.read(1)
                if not chunk:
                    # A cancellation shuts the socket down: an early end.
                    self._http.cancellation.check()
                    return
                yield chunk
        except NubladoError:
            raise
        except Exception as e:
            self._http.cancellation.check()
            if deadline.expired():
                raise NubladoTimeoutError(
                    "Timed out waiting for spawn progress", self.username
                ) from None
            raise NubladoWebError(
                f"Spawn progress stream failed: {type(e).__name__}: {self._http.redact(str(e))}",
                self.username,
                method="GET",
                url=response.url,
            ) from None

    def wait_for_spawn(
        self,
        timeout: Optional[datetime.timedelta] = None,
        *,
        on_progress: Optional[Callable[[SpawnProgressMessage], None]] = None,
    ) -> None:
        """Wait until the lab is ready.

        Parameters
        ----------
        timeout
            How long to wait; `None` waits as long as the hub keeps the
            progress stream open.
        on_progress
            Called with each progress event as it arrives. The events are
            then left to it: they are not logged (without it, each is
            logged at info level, as upstream does).

        Raises
        ------
        NubladoUsageError
            ``timeout`` is neither `None` nor a positive `datetime.timedelta`.
        NubladoSpawnTimeoutError
            The timeout passed (a `NubladoSpawnError` and a
            `NubladoTimeoutError`); ``log`` has every progress message.
        NubladoSpawnError
            The spawn failed or the stream ended without the lab being
            ready, or the hub restarted and forgot the spawn; ``log`` has
            every progress message.
        NubladoWebError
            The hub refused or failed.
        NubladoProtocolError
            The progress stream is malformed.

        Notes
        -----
        A progress stream that breaks (the hub or a proxy restarted) is
        opened again until the timeout, or, without one, as many times in
        a row as the retry policy allows.
        """
        check_duration(timeout, "timeout", self.username, optional=True)
        deadline = Deadline(timeout)
        started_at = datetime.datetime.now(tz=datetime.timezone.utc)
        log: List[str] = []
        last: Optional[SpawnProgressMessage] = None
        try:
            for message in self._progress(deadline, log=on_progress is None):
                last = message
                log.append(message.message)
                if on_progress is not None:
                    on_progress(message)
                if message.ready:
                    return
        except _SpawnGoneError as e:
            raise NubladoSpawnError(str(e), log, self.username, started_at=started_at) from None
        except NubladoTimeoutError:
            assert timeout is not None
            raise NubladoSpawnTimeoutError(
                f"Lab did not start within {timeout.total_seconds():.0f}s"
                + (f"; last message: {last.message}" if last else ""),
                log,
                self.username,
                started_at=started_at,
            ) from None
        raise NubladoSpawnError(
            last.message if last else "", log, self.username, started_at=started_at
        )

    def stop_lab(self) -> None:
        """Ask the hub to stop the user's lab; does not wait.

        Logs and returns when it is already stopped.

        Raises
        ------
        NubladoWebError
            The hub refused or failed.
        """
        if self.is_lab_stopped():
            self._logger.info("Lab is already stopped")
            return
        self._http.fetch(
            "DELETE",
            self._hub(f"hub/api/users/{self.username}/server"),
            referer=self._home,
            ok=(202, 204),
        )
        self._logger.info("Requested lab stop")

    def wait_for_lab_stopped(self, timeout: datetime.timedelta) -> None:
        """Wait until the hub lists no lab for the user.

        Parameters
        ----------
        timeout
            How long to wait.

        Raises
        ------
        NubladoUsageError
            ``timeout`` is not a positive `datetime.timedelta`.
        NubladoTimeoutError
            The lab was still there when the timeout passed.
        NubladoWebError
            The hub refused or failed.
        """
        check_duration(timeout, "timeout", self.username)
        deadline = Deadline(timeout)
        while not self.is_lab_stopped():
            if deadline.expired():
                raise NubladoTimeoutError(
                    f"Lab still running after {timeout.total_seconds():.0f}s", self.username
                )
            # Polling the hub's record is the only way to learn of the stop.
            # A cancellation ends the pause at once.
            self._pause(deadline.bound(_STOP_POLL))

    # The lab

    def auth_to_lab(self) -> None:
        """Log in to the user's lab (the OAuth round trip through the hub).

        Lab calls log in by themselves when they find no login or an
        expired one (a redirect or a 403), and then go to the host the login
        leads to (the user's own, with per-user subdomains), so calling it
        is optional, as upstream; calling it first makes the lab's URL known
        (`lab_url`) before any lab call.

        Raises
        ------
        NubladoWebError
            The lab is not running, or the hub or lab refused or failed.
        NubladoRedirectError
            The login redirected outside the URL space or looped.
        """
        self._http.fetch("GET", self._hub(f"user/{self.username}/lab"), navigate=True, ok=(200,))
        if "lab" not in self._http.xsrf:
            self._logger.debug("Lab login set no XSRF cookie")
        self._logger.debug("Logged in to the lab", lab_url=self.lab_url)

    def run_notebook(
        self,
        content: str,
        *,
        kernel_name: Optional[str] = None,
        clear_local_site_packages: bool = False,
        read_timeout: Optional[datetime.timedelta] = None,
        parameters: Optional[Mapping[str, Any]] = None,
    ) -> NotebookExecutionResult:
        """Run a notebook inside the lab with its execution extension.

        The Rubin lab runs the whole notebook with nbconvert while the
        request waits, so the answer can take minutes. The request therefore
        gets its own read timeout, one hour unless ``read_timeout`` says
        otherwise, rather than the client's HTTP timeout (30 s by default,
        which would abandon most notebooks). A cell failure is reported in
        `NotebookExecutionResult.error`, not raised. For servers without the
        extension use `execute_notebook`.

        Parameters
        ----------
        content
            The notebook, as ``.ipynb`` text.
        kernel_name
            Kernel to run it with; the notebook's own when `None`.
        clear_local_site_packages
            Ask the lab to ignore packages installed in the user's local
            site-packages.
        read_timeout
            How long to wait for the answer (one hour by default).
        parameters
            Values injected into the notebook here, before it is sent, as
            papermill injects them (see `execute_notebook`).

        Returns
        -------
        NotebookExecutionResult
            The executed notebook, its resources and any cell failure.

        Raises
        ------
        NubladoUsageError
            ``read_timeout`` is neither `None` nor a positive
            `datetime.timedelta`.
            With ``parameters``: the content is not an nbformat 4 notebook,
            or a parameter is invalid. Nothing was sent.
        NubladoWebError
            The request failed or timed out, or the lab refused it (for
            example a lab without the extension answers 404).
        NubladoProtocolError
            The answer is malformed.
        """
        check_duration(read_timeout, "read_timeout", self.username, optional=True)
        if parameters is not None:
            # Only notebooks with parameters load the notebook modules.
            from ._notebooks._format import dump_notebook, parse_notebook
            from ._notebooks._parameters import inject_parameters

            notebook = parse_notebook(content)
            inject_parameters(notebook, parameters)
            content = dump_notebook(notebook)
        timeout = read_timeout or _NOTEBOOK_READ_TIMEOUT
        api = self._lab_api()
        answer = api.execute_notebook(
            content,
            kernel_name=kernel_name,
            clear_local_site_packages=clear_local_site_packages,
            read_timeout=timeout.total_seconds(),
        )
        return _notebook_result(answer, self.username)

    def _lab_api(self) -> LabAPI:
        # The lab URL is read for each request, not fixed here: with per-user
        # subdomains the first lab call may be what logs in and learns the
        # lab's host (as upstream allows lab calls without auth_to_lab).
        return LabAPI(
            self._http,
            lambda: self.lab_url,
            extra_headers=self._lab_headers,
            reauth=self.auth_to_lab,
        )

    def _lab_headers(self) -> Dict[str, str]:
        headers = {"Sec-Fetch-Mode": "same-origin"}
        if "lab" in self._http.xsrf:
            headers["X-XSRFToken"] = self._http.xsrf["lab"]
        return headers

    def lab_session(
        self,
        notebook_name: Optional[str] = None,
        *,
        kernel_name: str = "lsst",
        max_websocket_size: Optional[int] = None,
        websocket_open_timeout: datetime.timedelta = datetime.timedelta(seconds=60),
        **session_options: Any,
    ) -> JupyterLabSessionManager:
        """Return a context manager for a kernel session in the user's lab.

        The session is created on entry and always deleted on exit. The
        lab login happens on the way when `auth_to_lab` was not called.

        Parameters
        ----------
        notebook_name
            Name recorded with the session.
        kernel_name
            Kernel to start.
        max_websocket_size
            Largest message accepted from the kernel, in bytes.
        websocket_open_timeout
            Time allowed to open the WebSocket and for the kernel to answer.
        **session_options
            Passed to `JupyterLabSession` (``keepalive_interval``,
            ``heartbeat_interval``, ``heartbeat_timeout``, ``prompt_acks``,
            ``reconnect``); checked at once.

        Returns
        -------
        JupyterLabSessionManager
            Context manager yielding the `JupyterLabSession`.

        Raises
        ------
        NubladoUsageError
            ``max_websocket_size`` is under 64 KiB,
            ``websocket_open_timeout`` is not a positive `datetime.timedelta`,
            or a session option is unknown or invalid.
        """
        return JupyterLabSessionManager(
            username=self.username,
            api=self._lab_api(),
            kernel_name=kernel_name,
            notebook_name=notebook_name,
            max_websocket_size=max_websocket_size,
            websocket_open_timeout=websocket_open_timeout,
            logger=self._logger,
            **session_options,
        )


class _SpawnGoneError(Exception):
    """The hub no longer has the spawn whose progress was being read."""


def _transient_failure(call: Callable[[], None]) -> Optional[NubladoWebError]:
    """Run ``call``; return its failure if it may pass, raise any other."""
    try:
        call()
    except NubladoWebError as e:
        if not is_transient(e):
            raise
        return e
    return None


def _notebook_result(answer: Dict[str, Any], user: str) -> NotebookExecutionResult:
    notebook = answer.get("notebook")
    resources = answer.get("resources") or {}
    error = answer.get("error")
    if not isinstance(notebook, str) or not isinstance(resources, dict):
        raise NubladoProtocolError("Notebook execution answer lacks the notebook", user)
    if error is None:
        return NotebookExecutionResult(notebook=notebook, resources=resources)
    if not isinstance(error, dict):
        raise NubladoProtocolError("Notebook execution error is not an object", user)
    return NotebookExecutionResult(
        notebook=notebook,
        resources=resources,
        error=NotebookExecutionError(
            name=str(error.get("ename", "")),
            value=str(error.get("evalue", "")),
            message=str(error.get("err_msg", "")),
            traceback=str(error.get("traceback", "")),
        ),
    )
