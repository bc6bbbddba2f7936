"""Exceptions raised by nublado_sync.

Every fault a caller can meet is one of these: no raw library, socket or
JSON error escapes the package. All are picklable (they cross process
boundaries in job runners) and carry no credentials.
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple, Type, TypeVar

from ._models import CodeContext, ExecutionResult
from ._reasons import server_message
from ._redact import redact_body, redact_url, strip_ansi

if TYPE_CHECKING:
    from ._reports import SentryEventInfo, SlackMessage

__all__ = [
    "NubladoCancelledError",
    "NubladoDiscoveryError",
    "NubladoError",
    "NubladoExecutionError",
    "NubladoExecutionTimeoutError",
    "NubladoKernelDiedError",
    "NubladoOutputLostError",
    "NubladoProtocolError",
    "NubladoRedirectError",
    "NubladoSessionClosedError",
    "NubladoSpawnError",
    "NubladoSpawnFormError",
    "NubladoSpawnTimeoutError",
    "NubladoTimeoutError",
    "NubladoUsageError",
    "NubladoWebError",
    "NubladoWebSocketError",
]


def _restore(cls: Type[NubladoError], args: Tuple[Any, ...], state: Dict[str, Any]) -> NubladoError:
    # Subclass constructors take different arguments; rebuilding from the
    # attribute dictionary keeps pickling independent of each signature.
    exc = cls.__new__(cls)
    exc.args = args
    exc.__dict__.update(state)
    return exc


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(tz=datetime.timezone.utc)


_W = TypeVar("_W", bound="NubladoWebError")


class NubladoError(Exception):
    """Base class of every exception of this package.

    Parameters
    ----------
    message
        What went wrong.
    user
        User the client was acting for.
    context
        Where the code being run came from, if any.
    failed_at
        When the operation failed; the current time when omitted.
    started_at
        When the operation that failed began.

    Attributes
    ----------
    message : str
        What went wrong.
    user : str or None
        User the client was acting for.
    context : CodeContext
        Code context; an empty one when none was given (never `None`).
    failed_at : datetime.datetime
        When the operation failed (UTC).
    started_at : datetime.datetime or None
        When the operation that failed began.
    """

    def __init__(
        self,
        message: str,
        user: Optional[str] = None,
        *,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        started_at: Optional[datetime.datetime] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.user = user
        self.context = context or CodeContext()
        self.failed_at = failed_at or _utcnow()
        self.started_at = started_at

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> Tuple[Any, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))

    def to_slack(self) -> SlackMessage:
        """Format the error as a Slack message.

        The same report as ``rubin-nublado-client``'s (without its Safir
        dependency): a summary, blocks for the node and cell, fields for
        the times, the exception type, the user and the image, and the
        details (traceback, code, URL, response, spawn log) as attachments.

        Returns
        -------
        SlackMessage
            The message; its ``to_slack()`` gives the Block Kit JSON to post
            to a Slack webhook.
        """
        from ._reports import slack_message

        return slack_message(self)

    def to_sentry(self) -> SentryEventInfo:
        """Return the tags, contexts and attachments to add to a Sentry event.

        Needs no Sentry package; `sentry_before_send` adds them to every
        event of a `NubladoError` when passed to ``sentry_sdk.init``.

        Returns
        -------
        SentryEventInfo
            Tags (the code context, status, request), contexts (the start
            time) and attachments (traceback, code, spawn log, body).
        """
        from ._reports import sentry_info

        return sentry_info(self)


class NubladoDiscoveryError(NubladoError):
    """Service discovery did not give the URL of the Nublado hub."""


class NubladoProtocolError(NubladoError):
    """A server answered with something this client cannot understand."""


class NubladoUsageError(NubladoError):
    """The client was called in a way it does not support.

    Examples are an argument of the wrong type or one session used by two
    threads at once.
    """


class NubladoSessionClosedError(NubladoUsageError):
    """A session was used after it was closed.

    A session closes itself after a timeout or a broken connection, since the
    kernel may still be busy with the abandoned request.
    """


def _cell_name(context: CodeContext, result: Optional[ExecutionResult]) -> str:
    # As a person finds the cell in JupyterLab: its position among the code
    # cells (from 1), its In [n], then its id.
    if not context.cell_number:
        return f"cell {context.cell}" if context.cell else "cell"
    details = []
    if result is not None and result.execution_count:
        details.append(f"In [{result.execution_count}]")
    if context.cell:
        details.append(f"id {context.cell!r}")
    return f"cell {context.cell_number}" + (f" ({', '.join(details)})" if details else "")


# How much of the failing code a message quotes: enough to recognise it.
# The whole code is in the ``code`` attribute; the traceback shows where.
_EXCERPT_LINES = 2
_EXCERPT_WIDTH = 100


def _cut(line: str, width: int = _EXCERPT_WIDTH) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _more(count: int) -> str:
    return f"{count} more line" + ("" if count == 1 else "s")


def _code_excerpt(code: str) -> str:
    """Return the first lines of code, each cut short, and how many more there are."""
    lines = code.strip("\n").splitlines() or [""]
    shown = [_cut(line) for line in lines[:_EXCERPT_LINES]]
    if len(lines) > _EXCERPT_LINES:
        shown.append(f"… ({_more(len(lines) - _EXCERPT_LINES)})")
    return "\n".join(shown)


def _code_failure_intro(
    user: Optional[str],
    code: Optional[str],
    context: CodeContext,
    what: str,
    result: Optional[ExecutionResult] = None,
) -> str:
    if context.notebook:
        return f"{user}: {_cell_name(context, result)} of notebook {context.notebook} {what}"
    if code:
        # One line: the first line of the code, with a count of the rest.
        lines = code.strip("\n").splitlines() or [""]
        quoted = f"'{_cut(lines[0], 80)}'"
        if len(lines) > 1:
            quoted += f" (and {_more(len(lines) - 1)})"
        return f"{user}: running code {quoted} {what}"
    return f"{user}: running code {what}"


class NubladoExecutionError(NubladoError):
    """The kernel reported an error while running code.

    Parameters
    ----------
    user
        User the code ran as.
    code
        Code that failed.
    context
        Where the code came from.
    error
        The kernel's error report, usually a traceback.
    failed_at
        When the code failed; the current time when omitted.
    status
        ``execute_reply`` status (``error`` or ``aborted``), or another word
        naming the failure (``dead``, ``unresponsive``, ``gone``, ``output
        lost``).
    started_at
        When execution began.
    result
        Everything the execution produced before the failure.
    notebook
        When running a notebook, the notebook executed up to and including
        the failed cell, as ``.ipynb`` text.

    Attributes
    ----------
    code : str or None
        Code that failed. ``str()`` quotes only its first line (for a
        notebook cell, its first two), with a count of the rest.
    error : str or None
        The kernel's error report, usually a traceback (with ANSI codes).
    status : str or None
        Why it failed, as above.
    result : ExecutionResult or None
        Everything the execution produced, including partial output.
    notebook : str or None
        The partly executed notebook, when running one.
    """

    def __init__(
        self,
        user: Optional[str],
        *,
        code: Optional[str] = None,
        context: Optional[CodeContext] = None,
        error: Optional[str] = None,
        failed_at: Optional[datetime.datetime] = None,
        status: Optional[str] = None,
        started_at: Optional[datetime.datetime] = None,
        result: Optional[ExecutionResult] = None,
        notebook: Optional[str] = None,
    ) -> None:
        super().__init__(
            "Code execution failed",
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )
        self.code = code
        self.error = error
        self.status = status
        self.result = result
        self.notebook = notebook

    def __str__(self) -> str:
        msg = _code_failure_intro(self.user, self.code, self.context, "failed", self.result)
        if self.status and self.status != "error":
            msg += f" (status: {self.status})"
        if self.context.notebook and self.code:
            msg += f"\nCode: {_code_excerpt(self.code)}"
        if self.error:
            msg += f"\nError: {strip_ansi(self.error)}"
        return msg


class NubladoKernelDiedError(NubladoExecutionError):
    """The kernel died (or was restarted) while running the code.

    Its state is gone. The session stays open: the server restarts the
    kernel under the same id, and the next call waits until it is ready.
    """


class NubladoOutputLostError(NubladoExecutionError):
    """Some of the code's output never reached the client.

    Raised by `~nublado_sync.JupyterLabSession.run_python` when the lab's
    IOPub rate limit replaced output with a notice, or when the WebSocket
    dropped while the code ran and the server did not keep what the kernel
    sent meanwhile, so the returned text would be incomplete. ``result``
    holds what did arrive. `~nublado_sync.JupyterLabSession.execute` sets
    `ExecutionResult.output_lost` instead, and raises this only when the
    request's reply itself was lost in a reconnect (its status is then
    unknown).
    """


class NubladoTimeoutError(NubladoError):
    """An operation did not finish in time."""


class NubladoExecutionTimeoutError(NubladoTimeoutError):
    """Code did not finish running before its deadline.

    The session interrupts the kernel and closes itself before raising.

    Parameters
    ----------
    user
        User the code ran as.
    code
        Code that timed out.
    timeout
        The deadline that passed.
    context
        Where the code came from.
    failed_at
        When the deadline passed; the current time when omitted.
    started_at
        When execution began.
    result
        What the code produced before the deadline.
    notebook
        When running a notebook, the notebook executed up to and including
        the cell that timed out, as ``.ipynb`` text.

    Attributes
    ----------
    code : str or None
        Code that timed out.
    timeout : datetime.timedelta
        The deadline that passed.
    result : ExecutionResult or None
        Partial result: output seen before the deadline.
    notebook : str or None
        The partly executed notebook, when running one.
    """

    def __init__(
        self,
        user: Optional[str],
        *,
        code: Optional[str] = None,
        timeout: datetime.timedelta,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        started_at: Optional[datetime.datetime] = None,
        result: Optional[ExecutionResult] = None,
        notebook: Optional[str] = None,
    ) -> None:
        seconds = timeout.total_seconds()
        super().__init__(
            f"Code execution timed out after {seconds:.02f}s",
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )
        self.code = code
        self.timeout = timeout
        self.result = result
        self.notebook = notebook

    @property
    def output(self) -> str:
        """Standard output seen before the deadline."""
        return self.result.stdout if self.result else ""

    def __str__(self) -> str:
        msg = _code_failure_intro(self.user, self.code, self.context, "timed out", self.result)
        if self.context.notebook and self.code:
            msg += f"\nCode: {_code_excerpt(self.code)}"
        return f"{msg}\n{self.message}"


class NubladoRedirectError(NubladoError):
    """A redirect left the hub and lab URL space, or went round in a loop.

    Parameters
    ----------
    message
        What went wrong, such as ``Unexpected redirect``.
    url
        The offending URL; secrets in it are redacted.
    user
        User the client was acting for.
    context
        Where the code being run came from, if any.
    failed_at
        When the redirect was seen; the current time when omitted.
    started_at
        When the operation began.

    Attributes
    ----------
    url : str
        The offending URL, redacted.
    """

    def __init__(
        self,
        message: str,
        url: str,
        user: Optional[str] = None,
        *,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        started_at: Optional[datetime.datetime] = None,
    ) -> None:
        self.url = redact_url(url)
        super().__init__(
            f"{message}: {self.url}",
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )


class NubladoSpawnError(NubladoError):
    """The lab did not start.

    Parameters
    ----------
    message
        The last progress message, or a description of the failure.
    log
        Every progress message seen.
    user
        User the lab was for.
    context
        Where the code being run came from, if any.
    failed_at
        When the spawn failed; the current time when omitted.
    started_at
        When the spawn began.

    Attributes
    ----------
    log : list of str
        Every progress message seen.
    """

    def __init__(
        self,
        message: str,
        log: List[str],
        user: Optional[str] = None,
        *,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        started_at: Optional[datetime.datetime] = None,
    ) -> None:
        super().__init__(
            message or "No output from spawn attempt",
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )
        self.log = list(log)


class NubladoCancelledError(NubladoError):
    """The call was stopped from another thread by `NubladoClient.cancel` or ``close``.

    Raised in the thread whose call was in flight, after the usual clean-up
    (the lab session and its kernel deleted), and by every later call of the
    cancelled client.
    """


class NubladoSpawnTimeoutError(NubladoSpawnError, NubladoTimeoutError):
    """The lab was not ready before the caller's deadline.

    Both a `NubladoSpawnError` (with the progress ``log``) and a
    `NubladoTimeoutError`. The spawn itself may still succeed later.
    """


class NubladoWebError(NubladoError):
    """An HTTP request failed or was answered with an error status.

    Parameters
    ----------
    message
        What went wrong: ``"Status {code} from {METHOD} {url}"``, with what
        the status means when that is clear (``: the token was refused``);
        for a request that got no answer, why in words (``Cannot connect to
        host:port: connection refused ...``).
    user
        User the client was acting for.
    body
        Response body, if any; XSRF tokens and URL secrets are redacted.
    context
        Where the code being run came from, if any.
    failed_at
        When the request failed; the current time when omitted.
    method
        HTTP method of the request.
    started_at
        When the operation began.
    status
        HTTP status of the answer, if one came.
    url
        URL of the request; secrets in it are redacted.

    Attributes
    ----------
    body : str or None
        Redacted response body (its first 64 kB). ``str()`` shows only the
        server's message from it: a JSON error's ``message``, or an HTML
        error page's error text.
    method : str or None
        HTTP method.
    status : int or None
        HTTP status.
    url : str or None
        Redacted URL.
    """

    def __init__(
        self,
        message: str,
        user: Optional[str] = None,
        *,
        body: Optional[str] = None,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        method: Optional[str] = None,
        started_at: Optional[datetime.datetime] = None,
        status: Optional[int] = None,
        url: Optional[str] = None,
    ) -> None:
        super().__init__(
            redact_url(message),
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )
        self.body = redact_body(body) if body else None
        self.method = method
        self.status = status
        self.url = redact_url(url) if url else None

    def __str__(self) -> str:
        # The server's own message, not its whole error page (``body``
        # keeps that).
        summary = server_message(self.body)
        if summary and summary not in self.message:
            return f"{self.message}\nBody:\n{summary}"
        return self.message

    @classmethod
    def from_exception(
        cls: Type[_W],
        exc: BaseException,
        user: Optional[str] = None,
        *,
        started_at: Optional[datetime.datetime] = None,
    ) -> _W:
        """Build the exception from a requests, urllib3 or socket exception.

        The counterpart of upstream's ``from_exception``, which takes httpx
        exceptions: code that makes its own requests (with ``requests``)
        reports their failures the same way this package does.

        Parameters
        ----------
        exc
            The exception. One with a ``response`` (``requests.HTTPError``
            from ``raise_for_status``) gives ``Status {code} from {METHOD}
            {url}`` with the status and the body; any other gives
            ``{ExceptionName}: {text}``, with the method and URL of its
            ``request`` when it has one.
        user
            User the request was made for.
        started_at
            When the operation began.

        Returns
        -------
        NubladoWebError
            The new exception (of the class it was called on).
        """
        request = getattr(exc, "request", None)
        response = getattr(exc, "response", None)
        method = getattr(request, "method", None)
        url = getattr(request, "url", None)
        status = getattr(response, "status_code", None)
        if response is not None and isinstance(status, int):
            url = getattr(response, "url", None) or url
            method = method or getattr(getattr(response, "request", None), "method", None)
            try:
                body: Optional[str] = response.text
            except Exception:  # a streamed body that failed
                body = None
            where = f"{method} {url}" if method else str(url)
            return cls(
                f"Status {status} from {where}",
                user,
                body=body or None,
                method=method,
                started_at=started_at,
                status=status,
                url=url,
            )
        text = str(exc)
        message = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        return cls(
            message,
            user,
            method=method if isinstance(method, str) else None,
            started_at=started_at,
            url=url if isinstance(url, str) else None,
        )


class NubladoSpawnFormError(NubladoSpawnError, NubladoWebError):
    """The hub answered the spawn form with a server error.

    A spawn that fails within about a second fails the form ``POST``
    itself. That is both a failed spawn (`NubladoSpawnError`) and a failed
    request (`NubladoWebError`, as upstream raises it), so a handler for
    either catches it.

    Parameters
    ----------
    message
        What failed, with the hub's reason in words.
    log
        The hub's reason, as the only progress message.
    user
        User the lab was for.
    body
        The hub's answer (redacted).
    context
        Where the code being run came from, if any.
    failed_at
        When the spawn failed; the current time when omitted.
    method
        HTTP method of the request (``POST``).
    started_at
        When the spawn began.
    status
        HTTP status of the answer.
    url
        URL of the spawn form (redacted).
    """

    def __init__(
        self,
        message: str,
        log: List[str],
        user: Optional[str] = None,
        *,
        body: Optional[str] = None,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        method: Optional[str] = None,
        started_at: Optional[datetime.datetime] = None,
        status: Optional[int] = None,
        url: Optional[str] = None,
    ) -> None:
        NubladoWebError.__init__(
            self,
            message,
            user,
            body=body,
            context=context,
            failed_at=failed_at,
            method=method,
            started_at=started_at,
            status=status,
            url=url,
        )
        self.log = list(log)

    def __str__(self) -> str:
        # The reason is in the message; the page it came from is in ``body``.
        return self.message


class NubladoWebSocketError(NubladoError):
    """Talking to the lab's kernel WebSocket failed.

    Parameters
    ----------
    message
        What went wrong.
    user
        User the client was acting for.
    body
        Body of a refused upgrade, if any (redacted).
    code
        HTTP status of a refused upgrade, or the WebSocket close code.
    context
        Where the code being run came from, if any.
    failed_at
        When it failed; the current time when omitted.
    started_at
        When the operation began.

    Attributes
    ----------
    body : str or None
        Redacted body of a refused upgrade.
    code : int or None
        HTTP status of a refused upgrade, or the WebSocket close code.
    dropped : bool
        Whether the connection itself was lost (reset, closed without a
        close frame, or closed with a code that invites a reconnect) and
        was not, or could not be, opened again; see `ReconnectPolicy`.
    """

    def __init__(
        self,
        message: str,
        user: Optional[str] = None,
        *,
        body: Optional[str] = None,
        code: Optional[int] = None,
        context: Optional[CodeContext] = None,
        failed_at: Optional[datetime.datetime] = None,
        started_at: Optional[datetime.datetime] = None,
    ) -> None:
        if not message.startswith("Error talking to lab WebSocket"):
            message = f"Error talking to lab WebSocket: {message}"
        super().__init__(
            redact_url(message),
            user,
            context=context,
            failed_at=failed_at,
            started_at=started_at,
        )
        self.body = redact_body(body) if body else None
        self.code = code
        self.dropped = False

    @classmethod
    def from_exception(
        cls, exc: BaseException, user: Optional[str] = None
    ) -> NubladoWebSocketError:
        """Build the exception from a websocket-client or socket exception.

        The counterpart of upstream's ``from_exception``, which takes
        ``websockets`` exceptions.

        Parameters
        ----------
        exc
            The exception. A refused upgrade
            (``websocket.WebSocketBadStatusException``) gives its status as
            ``code`` and its body.
        user
            User the connection was for.

        Returns
        -------
        NubladoWebSocketError
            The new exception.
        """
        text = str(exc)
        error = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
        status = getattr(exc, "status_code", None)
        if isinstance(status, int):
            raw = getattr(exc, "resp_body", None)
            body = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
            return cls(
                f"WebSocket upgrade refused: {error}",
                user,
                body=body if isinstance(body, str) and body else None,
                code=status,
            )
        return cls(error, user)


class KernelGoneError(NubladoWebSocketError):
    """The lab answered, and no longer has the session's kernel.

    It died and could not be restarted (on a crowded lab a kernel that
    fails to start is removed), or something shut it down. Reconnecting
    cannot help; a new session can. Not exported: callers see a
    `NubladoWebSocketError`.
    """
