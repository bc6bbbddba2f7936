"""The kernel session: running code over an open kernel WebSocket."""

from __future__ import annotations

import contextlib
import datetime
import threading
import time
import uuid
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Iterator,
    Mapping,
    NoReturn,
    Optional,
    Sequence,
    Union,
)

from ._arguments import check_duration
from ._deadline import Deadline
from ._exceptions import (
    NubladoError,
    NubladoExecutionError,
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoSessionClosedError,
    NubladoTimeoutError,
    NubladoUsageError,
    NubladoWebError,
    NubladoWebSocketError,
)
from ._execution import ExecutionCollector, MessageCallback, OutputCallback
from ._logging import Logger, debug_enabled, default_logger
from ._messages import KernelMessage, execute_request, make_request
from ._models import CodeContext, ExecutionResult
from ._pipeline import CellDeadline, PipelineCollector, QueuedCell, ResultCallback
from ._reasons import one_line
from ._reconnect import Continuity, ReconnectPolicy
from ._transport import KernelSocket

if TYPE_CHECKING:
    import websocket

__all__ = ["JupyterLabSession"]

# Seconds given to the interrupt and close that follow a timeout, so the
# call ends soon after its deadline even when the server does not answer.
_ABANDON_SEND_TIMEOUT = 1.0
_CLOSE_TIMEOUT = 1.0
# How long one readiness probe waits before another is sent: the first
# requests to a starting kernel can be lost before its channels connect.
_PROBE_RETRY = 1.0
_DEFAULT_RECONNECT = ReconnectPolicy()

Opener = Callable[[Optional[float]], "websocket.WebSocket"]
"""Opens a new WebSocket to the same kernel within the given seconds."""


def _seconds(value: Optional[datetime.timedelta], name: str) -> Optional[float]:
    checked = check_duration(value, name, optional=True)
    return None if checked is None else checked.total_seconds()


class JupyterLabSession:
    """An open WebSocket session to a kernel in a Jupyter lab.

    Usually made by `JupyterLabSessionManager` (through
    `NubladoClient.lab_session` or `open_lab_session`), which also creates
    and deletes the session on the server. It can also wrap a WebSocket the
    caller opened with ``websocket.create_connection``.

    One session serves one thread at a time; a second thread calling it
    while a call runs gets `NubladoUsageError`.

    Parameters
    ----------
    username
        User the session is for.
    session_id
        Id of the Jupyter server session.
    socket
        Open websocket-client connection to the kernel's ``channels``
        endpoint. The session uses the ``v1.kernel.websocket.jupyter.org``
        encoding when that subprotocol was negotiated and the legacy JSON
        encoding otherwise. The session owns it from now on.
    logger
        Logger to use; a standard-library-backed one when omitted.
    keepalive_interval
        Interval of the unsolicited pong frames that keep an idle
        connection from being closed by the server's ping timeout; `None`
        turns them off.
    heartbeat_interval
        While waiting for results, after this long without a message from
        the kernel the session checks that the kernel still answers (a
        ``kernel_info_request`` on the control channel).
    heartbeat_timeout
        A kernel that leaves that check unanswered this long is reported
        dead, so a vanished kernel or connection never hangs a call.
    max_message_size
        Largest message accepted from the kernel, in bytes; a larger one
        raises `NubladoWebSocketError` as soon as its frame headers announce
        the size, before it is read. `None` for no limit.
    prompt_acks
        While a reply is awaited, answer each message with an unsolicited
        pong frame when nothing more is waiting. This lets the server's TCP
        stack send the next message at once instead of waiting for the
        client's delayed ACK (Nagle's algorithm), which cuts the round trip
        of a small cell from about 50 ms to about 12 ms. Turn it off to send
        nothing the server did not ask for.
    reconnect
        How to reconnect when the WebSocket drops while a call runs or
        while the session is idle (see `ReconnectPolicy`); `None` to report
        a drop at once. Only a session opened by `JupyterLabSessionManager`
        can reconnect: one wrapping the caller's WebSocket cannot.
    """

    def __init__(
        self,
        *,
        username: str,
        session_id: str,
        socket: websocket.WebSocket,
        logger: Optional[Logger] = None,
        keepalive_interval: Optional[datetime.timedelta] = datetime.timedelta(seconds=15),
        heartbeat_interval: datetime.timedelta = datetime.timedelta(seconds=3),
        heartbeat_timeout: datetime.timedelta = datetime.timedelta(seconds=60),
        max_message_size: Optional[int] = None,
        prompt_acks: bool = True,
        reconnect: Optional[ReconnectPolicy] = _DEFAULT_RECONNECT,
        _client_id: Optional[str] = None,
        _opener: Optional[Opener] = None,
    ) -> None:
        if reconnect is not None and not isinstance(reconnect, ReconnectPolicy):
            raise NubladoUsageError("reconnect must be a ReconnectPolicy or None", username)
        self.username = username
        self.session_id = session_id
        self._logger = (logger or default_logger()).bind(user=username, session=session_id)
        self._heartbeat_interval = _seconds(heartbeat_interval, "heartbeat_interval") or 3.0
        self._heartbeat_timeout = _seconds(heartbeat_timeout, "heartbeat_timeout") or 60.0
        self._keepalive_interval = _seconds(keepalive_interval, "keepalive_interval")
        self._max_message_size = max_message_size
        self._prompt_acks = prompt_acks
        self._reconnect_policy = reconnect
        self._opener = _opener
        self._socket = self._wrap(socket)
        # The header's ``session`` names this client connection (the
        # manager uses the same id as the WebSocket's ``session_id``, so a
        # reconnect is the same client to the server); the server session
        # id names the server-side record.
        self._client_id = _client_id or uuid.uuid4().hex
        self._reconnects = 0
        self._gave_up = False
        self._ready = False
        # The kernel process's own session id, from its message headers; a
        # different one later means the server restarted the kernel.
        self._kernel_process: Optional[str] = None
        self._closed_because: Optional[str] = None
        self._aborted = False
        self._in_use = threading.Lock()

    def __repr__(self) -> str:
        state = f"closed ({self._closed_because})" if self.closed else "open"
        return (
            f"<JupyterLabSession user={self.username!r} session_id={self.session_id!r}"
            f" protocol={self.protocol!r} {state}>"
        )

    def __enter__(self) -> JupyterLabSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        """Whether the session is closed and can no longer run code."""
        return self._closed_because is not None

    @property
    def protocol(self) -> str:
        """The wire encoding in use, ``v1`` or ``legacy``."""
        return "v1" if self._socket.is_v1 else "legacy"

    # Public calls

    def run_python(
        self,
        code: str,
        context: Optional[CodeContext] = None,
        *,
        timeout: Optional[datetime.timedelta] = None,
    ) -> str:
        """Run a block of Python code in the kernel and return its stdout.

        Parameters
        ----------
        code
            Code to run.
        context
            Where the code came from, attached to any exception.
        timeout
            Deadline for the whole call, sending included; `None` for none.
            A dead kernel or connection is reported even without one.

        Returns
        -------
        str
            What the code wrote to standard output. Standard error, the
            value of the last expression and rich displays are not part of
            it; `execute` returns those.

        Raises
        ------
        NubladoExecutionError
            The code raised (status ``error``) or the request was aborted
            (status ``aborted``).
        NubladoKernelDiedError
            The kernel died or stopped answering while running the code.
        NubladoOutputLostError
            Some of the output is missing: the server's IOPub rate limit
            dropped it, or the WebSocket dropped while the code ran and the
            server did not keep what the kernel sent meanwhile (the session
            reconnects by itself; see ``reconnect``).
        NubladoExecutionTimeoutError
            The deadline passed. The kernel was interrupted and the session
            closed; the partial output is on the exception.
        NubladoWebSocketError
            The connection was closed or broke and could not be opened
            again (see ``reconnect``); the session is closed.
        NubladoProtocolError
            The server sent a frame that could not be decoded; the session
            is closed.
        NubladoSessionClosedError
            The session was already closed, or `abort` was called while
            the code ran.
        NubladoUsageError
            Invalid arguments, or another thread is using the session.
        """
        result = self.execute(code, context, timeout=timeout)
        if result.output_lost:
            if result.reconnects and not _rate_limit_notice(result.stderr):
                why = (
                    "The kernel WebSocket dropped while the code ran and the server did"
                    " not keep what the kernel sent meanwhile; the output is incomplete"
                )
            else:
                why = (
                    "The lab's IOPub rate limit dropped output; the output is"
                    f" incomplete. Notice: {result.stderr.strip()}"
                )
            raise NubladoOutputLostError(
                self.username,
                code=code,
                context=context,
                error=why,
                status="output lost",
                started_at=result.started_at,
                result=result,
            )
        return result.stdout

    def execute(
        self,
        code: str,
        context: Optional[CodeContext] = None,
        *,
        timeout: Optional[datetime.timedelta] = None,
        on_output: Optional[OutputCallback] = None,
        raise_on_error: bool = True,
        store_history: bool = False,
        on_message: Optional[MessageCallback] = None,
    ) -> ExecutionResult:
        """Run code and return everything it produced.

        Parameters
        ----------
        code
            Code to run.
        context
            Where the code came from, attached to any exception.
        timeout
            Deadline for the whole call, sending included; `None` for none.
        on_output
            Called in this thread with each output (a dict in nbformat 4
            output shape) as it arrives; an exception it raises ends the
            call, closes the session and propagates.
        raise_on_error
            With `False`, a failure reported by the kernel (status ``error``
            or ``aborted``) is returned in the result instead of raised.
        store_history
            With `True`, the kernel numbers the request in its history, as
            a notebook's cells are numbered: the result's
            ``execution_count`` and the ``In [n]`` of tracebacks count up.
        on_message
            Called in this thread with each kernel message answering the
            request, as a dict in the Jupyter message shape (``channel``,
            ``msg_type``, ``header``, ``parent_header``, ``metadata``,
            ``content``), for callers that need more than the outputs
            (``clear_output``, ``update_display_data``, timestamps). What
            it raises ends the call, as for ``on_output``.

        Returns
        -------
        ExecutionResult
            Standard output and error, the result and display outputs, the
            error fields, timings, and whether output was lost to the
            server's rate limit (`ExecutionResult.output_lost`).

        Raises
        ------
        NubladoExecutionError
            The code raised or was aborted (unless ``raise_on_error`` is
            false).
        NubladoOutputLostError
            The WebSocket dropped while the code ran and the reply was lost
            with it (the server kept nothing); raised whatever
            ``raise_on_error`` says. When only some output may be lost, the
            result says so instead (`ExecutionResult.output_lost`).
        NubladoKernelDiedError
            The kernel died or stopped answering while running the code.
        NubladoExecutionTimeoutError
            The deadline passed; the kernel was interrupted and the session
            closed.
        NubladoWebSocketError
            The connection was closed or broke and could not be opened
            again (see ``reconnect``); the session is closed.
        NubladoProtocolError
            The server sent a frame that could not be decoded; the session
            is closed.
        NubladoSessionClosedError
            The session was already closed, or `abort` was called while
            the code ran.
        NubladoUsageError
            Invalid arguments, or another thread is using the session.
        """
        if not isinstance(code, str):
            raise NubladoUsageError(f"code must be a str, not {type(code).__name__}", self.username)
        if context is not None and not isinstance(context, CodeContext):
            raise NubladoUsageError("context must be a CodeContext", self.username)
        deadline = Deadline(timeout if _seconds(timeout, "timeout") else None)
        self._check_open()
        self._claim()
        try:
            with self._holding_socket():
                return self._execute(
                    code,
                    context,
                    deadline,
                    on_output,
                    raise_on_error,
                    store_history=store_history,
                    on_message=on_message,
                )
        finally:
            self._in_use.release()

    def execute_notebook(
        self,
        content: Union[str, bytes, Mapping[str, Any]],
        *,
        name: Optional[str] = None,
        cell_timeout: Optional[datetime.timedelta] = None,
        on_output: Optional[OutputCallback] = None,
    ) -> str:
        """Run a notebook's code cells in order and return it executed.

        A shortcut for ``nublado_sync.execute_notebook(session, content,
        ...)``, kept for the callers that use it; see `execute_notebook`
        for what it does, its arguments and its exceptions. The notebook
        runner lives in a package of its own that uses the session; this
        method imports it only when called.

        Parameters
        ----------
        content
            Notebook as ``.ipynb`` text or parsed JSON; not modified.
        name
            Notebook name for error reports.
        cell_timeout
            Deadline of each cell; `None` for none.
        on_output
            Called with each output as it arrives.

        Returns
        -------
        str
            The executed notebook as ``.ipynb`` JSON text.

        Raises
        ------
        NubladoUsageError
            The content is not an nbformat 4 notebook.
        NubladoExecutionError
            A cell failed: the exception names the cell (its context) and
            carries the notebook executed so far (``notebook``).
        NubladoExecutionTimeoutError
            A cell ran past ``cell_timeout``; the session is closed.
        NubladoWebSocketError
            The connection failed.
        """
        # Imported here: the runner uses the session, not the other way.
        from ._notebooks._runner import execute_notebook

        return execute_notebook(
            self, content, name=name, cell_timeout=cell_timeout, on_output=on_output
        )

    def interrupt(self) -> None:
        """Interrupt whatever the kernel is running.

        Sends an ``interrupt_request`` on the control channel without
        waiting for its reply. The interrupted request then ends with a
        ``KeyboardInterrupt`` error. Unlike the other methods it may be
        called from another thread, or from an ``on_output`` callback, while
        a call is running.

        Raises
        ------
        NubladoSessionClosedError
            The session is closed.
        NubladoWebSocketError
            Sending failed.
        """
        self._check_open()
        self._send_interrupt()

    def abort(self) -> None:
        """Stop this session from another thread: interrupt the kernel and cut the connection.

        Made for a thread that supervises others (the batch runner on
        Ctrl-C): a call running in another thread ends at once with
        `NubladoSessionClosedError`, whatever the kernel does, and every
        later call raises it too. The caller that owns the session still
        closes it (its session manager deletes it, which shuts the kernel
        down). Never raises; safe to call more than once.
        """
        if self._aborted:
            return
        self._aborted = True
        if self._socket.connected:
            try:
                self._send_interrupt(_ABANDON_SEND_TIMEOUT)
            except NubladoError:
                self._logger.debug("Could not interrupt the kernel", exc_info=True)
        self._socket.cut()

    def wait_until_ready(self, timeout: datetime.timedelta) -> None:
        """Wait until the kernel answers requests.

        A kernel that is still starting can lose requests or send start-up
        messages that look like a restart; this round trip (a
        ``kernel_info_request``) makes sure it is past that. `execute` calls
        it by itself when needed.

        Parameters
        ----------
        timeout
            How long to wait.

        Raises
        ------
        NubladoTimeoutError
            The kernel did not answer in time.
        NubladoWebSocketError
            The connection was closed or broke and could not be opened
            again (see ``reconnect``); the session is closed.
        NubladoSessionClosedError
            The session is closed.
        NubladoUsageError
            Another thread is using the session.
        """
        deadline = Deadline(timeout if _seconds(timeout, "timeout") else None)
        self._check_open()
        self._claim()
        try:
            with self._holding_socket():
                self._await_ready(deadline)
        except NubladoError as e:
            self._abandon(f"readiness check failed: {type(e).__name__}")
            raise
        finally:
            self._in_use.release()

    def close(self) -> None:
        """Close the WebSocket. Safe to call more than once; never raises.

        The kernel and the server session stay; the session manager deletes
        them.
        """
        self._close("closed by the caller")

    # Internals

    def _abort(self, error: NubladoError) -> None:
        # From another thread (a cancellation): the call in flight, if any,
        # raises ``error``; the caller's clean-up closes the session. Marked
        # aborted too, so that no reconnect follows the cut.
        self._aborted = True
        self._socket.abort(error)

    def _wrap(self, ws: websocket.WebSocket, *, claimed: bool = False) -> KernelSocket:
        return KernelSocket(
            ws,
            user=self.username,
            logger=self._logger,
            keepalive_interval=self._keepalive_interval,
            max_message_size=self._max_message_size,
            prompt_acks=self._prompt_acks,
            claimed=claimed,
        )

    @contextlib.contextmanager
    def _holding_socket(self) -> Iterator[None]:
        # The call reads the socket itself; the housekeeping thread stays
        # away until it lets go (of the socket it ends with, after a
        # reconnect: `_reconnect` hands the lock over).
        self._socket.io_lock.acquire()
        try:
            yield
        finally:
            self._socket.release()

    def _reconnect(self, deadline: Deadline, cause: NubladoWebSocketError) -> None:
        """Open a new WebSocket to the kernel in place of the one that dropped.

        Raises ``cause`` when the session cannot reconnect (no policy, no
        opener, not a drop), or a `NubladoWebSocketError` saying so when
        every attempt failed or the deadline left no time for another.
        """
        policy, opener = self._reconnect_policy, self._opener
        if policy is None or opener is None or not self._socket.dropped or self._aborted:
            raise cause
        # The old socket is broken: close it without waiting for an answer.
        self._socket.close(0.0)
        last: Optional[NubladoError] = None
        attempts = 0
        for attempt in range(1, policy.max_attempts + 1):
            if self._aborted:
                raise cause
            pause = policy.delay(attempt)
            remaining = deadline.remaining()
            if remaining is not None and remaining <= pause:
                break
            if pause:
                time.sleep(pause)
            attempts = attempt
            self._logger.warning(
                "Kernel WebSocket dropped, reconnecting",
                attempt=attempt,
                max_attempts=policy.max_attempts,
                cause=cause.message,
            )
            try:
                ws = opener(deadline.remaining())
            except (NubladoWebSocketError, NubladoTimeoutError, NubladoWebError) as e:
                last = e
                # Even a 404 may pass: a restarted configurable-http-proxy
                # knows no route until the hub gives it them again.
                self._logger.info("Reconnect attempt failed", attempt=attempt, error=e.message)
                continue
            # The new socket is held for this call from the start, so the
            # housekeeper never reads it under the call; the old one is let go.
            old, self._socket = self._socket, self._wrap(ws, claimed=True)
            old.io_lock.release()
            if self._was_aborted():
                # abort() ran while this connection was being made.
                self._socket.cut()
                raise cause
            self._reconnects += 1
            self._logger.info("Reconnected kernel WebSocket", attempt=attempt)
            return
        why = f"; last attempt: {last.message}" if last is not None else ""
        self._gave_up = True
        raise NubladoWebSocketError(
            f"{cause.message}; reconnecting failed after {attempts} attempt(s){why}",
            self.username,
            code=cause.code,
        ) from cause

    def _was_aborted(self) -> bool:
        # A method, not the attribute: abort() sets it from another thread.
        return self._aborted

    def _send_request(self, request: KernelMessage, deadline: Deadline) -> None:
        """Send a request, reconnecting first if the socket dropped.

        A send that fails because the connection dropped did not reach the
        kernel whole (the server discards a truncated frame), so it is sent
        again on the new connection.
        """
        for _ in range(2):
            if self._socket.dropped:
                self._reconnect(deadline, self._socket_error("dropped while idle"))
            try:
                # Without a deadline the heartbeat bounds the send too: a
                # server that stopped reading must not block it forever.
                self._socket.send(request, deadline.bound(self._heartbeat_timeout))
            except NubladoWebSocketError as e:
                if not self._socket.dropped:
                    raise
                self._reconnect(deadline, e)
            else:
                return
        self._socket.send(request, deadline.bound(self._heartbeat_timeout))

    def _socket_error(self, what: str) -> NubladoWebSocketError:
        return NubladoWebSocketError(f"The kernel WebSocket {what}", self.username)

    def _recv(
        self, timeout: float, deadline: Deadline, continuity: Optional[Continuity]
    ) -> Optional[KernelMessage]:
        """Read one message; reconnect if the connection dropped.

        Returns `None` when nothing arrived in ``timeout``, for a control
        frame, for a duplicate, and after a reconnect (which
        ``continuity`` counts).
        """
        try:
            msg = self._socket.recv(deadline.bound(timeout), ack=True)
        except NubladoWebSocketError as e:
            self._reconnect(deadline, e)
            if continuity is not None:
                continuity.dropped()
            return None
        if msg is None or continuity is None:
            return msg
        msg_id = msg.header.get("msg_id")
        if isinstance(msg_id, str) and continuity.seen(msg_id):
            return None
        return msg

    def _claim(self) -> None:
        # Refuse rather than queue: two threads interleaving requests on one
        # kernel would each see the other's state.
        if not self._in_use.acquire(blocking=False):
            raise NubladoUsageError(
                "The session is already in use by another call;"
                " a session serves one thread at a time",
                self.username,
            )

    def _check_open(self) -> None:
        if self._aborted:
            self._close("aborted")
        if self._closed_because is not None:
            raise NubladoSessionClosedError(
                f"The session is closed ({self._closed_because}); open a new one",
                self.username,
            )

    def _close(self, reason: str) -> None:
        if self._closed_because is None:
            self._closed_because = reason
            self._socket.close(_CLOSE_TIMEOUT)
            self._logger.debug("Closed kernel WebSocket", reason=reason)

    def _abandon(self, reason: str) -> None:
        # After a timeout, an interrupt from the caller or a broken stream the
        # kernel may still be working on our request: stop it, then close.
        if self._socket.connected:
            try:
                self._send_interrupt(_ABANDON_SEND_TIMEOUT)
            except NubladoError:
                self._logger.debug("Could not interrupt the kernel", exc_info=True)
        self._close(reason)

    def _send_interrupt(self, timeout: Optional[float] = _ABANDON_SEND_TIMEOUT) -> None:
        request = make_request(
            "control",
            "interrupt_request",
            {},
            session=self._client_id,
            username=self.username,
        )
        self._socket.send(request, timeout)

    def _execute(
        self,
        code: str,
        context: Optional[CodeContext],
        deadline: Deadline,
        on_output: Optional[OutputCallback],
        raise_on_error: bool,
        *,
        store_history: bool = False,
        on_message: Optional[MessageCallback] = None,
    ) -> ExecutionResult:
        started_at = datetime.datetime.now(tz=datetime.timezone.utc)
        request = execute_request(
            code, session=self._client_id, username=self.username, store_history=store_history
        )
        collector = ExecutionCollector(request.header["msg_id"], code, on_output, on_message)
        try:
            self._socket.drain()
            if self._socket.dropped:
                # Found dropped while idle: reconnect before anything else.
                self._reconnect(deadline, self._socket_error("dropped while idle"))
            if not self._ready:
                self._await_ready(deadline)
            self._send_request(request, deadline)
            self._logger.debug("Sent execute_request", msg_id=collector.msg_id)
            self._await_reply(collector, deadline)
        except NubladoKernelDiedError as e:
            e.code, e.context, e.started_at = code, context or e.context, started_at
            e.result = collector.result()
            raise
        except NubladoOutputLostError as e:
            # The connection is fine again and the kernel idle: the session
            # stays open.
            e.context, e.started_at = context or e.context, started_at
            raise
        except (NubladoTimeoutError, NubladoWebSocketError) as e:
            if self._aborted:
                self._close("aborted")
                raise NubladoSessionClosedError(
                    "The session was aborted while running the code", self.username
                ) from e
            # A connection that could not be opened again is reported as
            # such, even when the deadline ended the attempts.
            if deadline.expired() and not self._gave_up:
                self._raise_timeout(code, context, deadline, started_at, collector, e)
            self._abandon(f"{type(e).__name__}")
            e.context, e.started_at = context or e.context, started_at
            raise
        except NubladoError as e:
            self._abandon(type(e).__name__)
            e.context, e.started_at = context or e.context, started_at
            raise
        except BaseException as e:
            # KeyboardInterrupt, or an exception from the output callback.
            self._abandon(f"interrupted by {type(e).__name__}")
            raise
        result = collector.result()
        if collector.rate_limited:
            self._logger.warning(
                "Lab IOPub rate limit dropped output",
                notice=one_line(collector.rate_limit_notice, 500),
            )
        if raise_on_error and result.status != "ok":
            raise NubladoExecutionError(
                self.username,
                code=code,
                context=context,
                error=result.error_text,
                status=result.status or "unknown",
                started_at=started_at,
                result=result,
            )
        return result

    def _execute_queued(
        self,
        cells: Sequence[QueuedCell],
        *,
        cell_timeout: Callable[[], Optional[datetime.timedelta]],
        on_output: Optional[OutputCallback] = None,
        on_result: Optional[ResultCallback] = None,
        on_start: Optional[Callable[[int], None]] = None,
    ) -> None:
        """Send every cell at once, then wait until the kernel answered them all.

        The kernel runs the queued requests one after the other without
        waiting for the network (see `nublado_sync._pipeline`). Each cell's
        result goes to ``on_result`` as it completes, failures included;
        a cell sent with ``stop_on_error`` that fails makes the kernel abort
        the rest (their results come with status ``aborted``).

        Raises
        ------
        NubladoExecutionTimeoutError
            The current cell ran past its deadline (``cell_timeout``, asked
            as the cell starts); the kernel was interrupted, which aborts
            the rest, and the session closed.
        NubladoKernelDiedError
            The kernel died in the current cell.
        NubladoWebSocketError
            The connection failed; the session is closed.
        NubladoSessionClosedError
            The session was closed, or aborted meanwhile.
        NubladoUsageError
            Another thread is using the session.
        """
        self._check_open()
        self._claim()
        try:
            with self._socket.io_lock:
                self._run_queued(cells, cell_timeout, on_output, on_result, on_start)
        finally:
            self._in_use.release()

    def _run_queued(
        self,
        cells: Sequence[QueuedCell],
        cell_timeout: Callable[[], Optional[datetime.timedelta]],
        on_output: Optional[OutputCallback],
        on_result: Optional[ResultCallback],
        on_start: Optional[Callable[[int], None]],
    ) -> None:
        requests = [
            execute_request(
                cell.code,
                session=self._client_id,
                username=self.username,
                stop_on_error=cell.stop_on_error,
                store_history=cell.store_history,
            )
            for cell in cells
        ]
        pipeline = PipelineCollector(
            [request.header["msg_id"] for request in requests],
            cells,
            cell_timeout=cell_timeout,
            on_output=on_output,
            on_result=on_result,
            on_start=on_start,
        )
        deadline = CellDeadline(pipeline)
        try:
            self._socket.drain()
            if self._socket.dropped:
                # Found dropped while idle: reconnect before anything else.
                self._reconnect(pipeline.deadline(), self._socket_error("dropped while idle"))
            if not self._ready:
                self._await_ready(pipeline.deadline())
            for request in requests:
                self._send_request(request, deadline)
            self._logger.debug("Sent queued execute_requests", count=len(requests))
            self._await_reply(pipeline, deadline)
        except NubladoOutputLostError as e:
            # A reconnect lost the rest of the queue's messages; the
            # connection is fine again and the kernel idle.
            e.context = pipeline.cell.context or e.context
            raise
        except NubladoKernelDiedError as e:
            cell, collector = pipeline.cell, pipeline.collector
            e.code, e.context, e.started_at = (
                cell.code,
                cell.context or e.context,
                collector.started_at,
            )
            e.result = collector.result()
            raise
        except (NubladoTimeoutError, NubladoWebSocketError) as e:
            if self._aborted:
                self._close("aborted")
                raise NubladoSessionClosedError(
                    "The session was aborted while running the code", self.username
                ) from e
            cell, collector = pipeline.cell, pipeline.collector
            if pipeline.deadline().expired() and not self._gave_up:
                self._raise_timeout(
                    cell.code, cell.context, pipeline.deadline(), collector.started_at, collector, e
                )
            self._abandon(f"{type(e).__name__}")
            e.context, e.started_at = cell.context or e.context, collector.started_at
            raise
        except NubladoError as e:
            self._abandon(type(e).__name__)
            e.context = pipeline.cell.context or e.context
            raise
        except BaseException as e:
            # KeyboardInterrupt, or an exception from a callback.
            self._abandon(f"interrupted by {type(e).__name__}")
            raise

    def _raise_timeout(
        self,
        code: str,
        context: Optional[CodeContext],
        deadline: Deadline,
        started_at: datetime.datetime,
        collector: ExecutionCollector,
        cause: Optional[BaseException] = None,
    ) -> NoReturn:
        self._abandon("timed out")
        assert deadline.timeout is not None  # only a real deadline expires
        self._logger.info("Code execution timed out", timeout=deadline.timeout.total_seconds())
        raise NubladoExecutionTimeoutError(
            self.username,
            code=code,
            timeout=deadline.timeout,
            context=context,
            started_at=started_at,
            result=collector.result(),
        ) from cause

    def _kernel_died(self, detail: str) -> NubladoKernelDiedError:
        # The server restarts a dead kernel under the same id; the next
        # request must first wait until the new kernel answers.
        self._ready = False
        self._logger.warning("Kernel died while running code", detail=detail)
        return NubladoKernelDiedError(self.username, error=detail, status="dead")

    def _await_reply(
        self, collector: Union[ExecutionCollector, PipelineCollector], deadline: Deadline
    ) -> None:
        debug = debug_enabled(self._logger)
        continuity = Continuity()
        heard_at = time.monotonic()
        probe_id: Optional[str] = None
        probe_sent_at = 0.0
        # After a reconnect: a kernel_info_request on shell, which the kernel
        # answers only after our request (shell requests run in order). Once
        # its reply and idle are in, everything of ours that is coming has
        # come; a reply still missing then was lost with the old socket.
        barrier_id: Optional[str] = None
        barrier_replied = barrier_idle = False
        while not collector.done:
            now = time.monotonic()
            if isinstance(collector, PipelineCollector) and self._settle_lost(collector, now):
                continue
            if deadline.expired():
                raise NubladoTimeoutError("Deadline passed", self.username)
            if probe_id is None and now - heard_at >= self._heartbeat_interval:
                probe_id = self._send_probe("control", deadline)
                probe_sent_at = now
            if probe_id is not None and now - probe_sent_at >= self._heartbeat_timeout:
                self._abandon("kernel stopped answering")
                raise NubladoKernelDiedError(
                    self.username,
                    error=(
                        "Neither the kernel nor the connection answered for"
                        f" {self._heartbeat_timeout:.0f}s"
                    ),
                    status="unresponsive",
                )
            if probe_id is None:
                wait = heard_at + self._heartbeat_interval - now
            else:
                wait = probe_sent_at + self._heartbeat_timeout - now
            if isinstance(collector, PipelineCollector):
                settle = collector.next_settle(now)
                wait = wait if settle is None else min(wait, settle)
            reconnects = continuity.reconnects
            msg = self._recv(wait, deadline, continuity)
            if continuity.reconnects != reconnects:
                # A new connection: the probe in flight may be lost with the
                # old one; the barrier tells when the request is over.
                collector.reconnects = continuity.reconnects
                heard_at, probe_id = time.monotonic(), None
                barrier_id = self._send_probe("shell", deadline)
                barrier_replied = barrier_idle = False
                continue
            if msg is None:
                continue
            if debug:
                self._logger.debug(
                    "Received kernel message",
                    channel=msg.channel,
                    msg_type=msg.msg_type,
                    ours=collector.owns(msg.parent_id),
                )
            parent = msg.parent_id
            if parent is not None and (parent in (probe_id, barrier_id) or collector.owns(parent)):
                heard_at = time.monotonic()
                if parent == probe_id:
                    probe_id = None
                    if self._restarted(msg):
                        raise self._kernel_died(
                            "The kernel was restarted while running the code (it answers"
                            " as a new process); its state is lost"
                        )
                    continue
                if parent == barrier_id:
                    barrier_replied |= msg.msg_type == "kernel_info_reply"
                    barrier_idle |= _is_idle(msg)
                    if barrier_replied and barrier_idle:
                        break
                    continue
            collector.feed(msg)
            if collector.kernel_died:
                raise self._kernel_died(
                    f"The kernel was restarted (status {msg.content.get('execution_state')!r})"
                    " while running the code; its state is lost"
                )
        collector.reconnect_lost = continuity.lost() or not collector.done
        if collector.reconnect_lost:
            self._logger.warning(
                "Messages sent while the WebSocket was down are missing",
                reconnects=continuity.reconnects,
                replied=collector.replied,
                missing_numbers=continuity.missing(),
            )
        if not collector.replied:
            raise NubladoOutputLostError(
                self.username,
                code=collector.code,
                error=(
                    "The kernel WebSocket dropped while the code ran, and the server"
                    " kept nothing of what the kernel sent meanwhile: the request's"
                    " reply and some of its output are lost. The kernel has finished"
                    " the request."
                ),
                status="output lost",
                result=collector.result(),
            )

    def _settle_lost(self, pipeline: PipelineCollector, now: float) -> bool:
        settled = pipeline.settle_lost_replies(now)
        for index in settled:
            self._logger.warning(
                "The server lost the kernel's reply to a queued cell;"
                " its outcome is taken from its outputs",
                cell=index + 1,
            )
        return bool(settled)

    def _restarted(self, msg: KernelMessage) -> bool:
        # A dead kernel's restart is announced by a status message that can
        # be lost (jupyter-server-documents sends only the new kernel's
        # "starting"); the heartbeat's answer then comes from a new process
        # while our request is gone for good.
        process = msg.header.get("session")
        return bool(self._kernel_process and process and process != self._kernel_process)

    def _send_probe(self, channel: str, deadline: Deadline) -> str:
        request = make_request(
            channel, "kernel_info_request", {}, session=self._client_id, username=self.username
        )
        self._socket.send(request, deadline.bound(self._heartbeat_timeout))
        msg_id: str = request.header["msg_id"]
        return msg_id

    def _await_ready(self, deadline: Deadline) -> None:
        # Ready means a kernel_info_reply and the matching idle status: the
        # idle proves iopub is connected and that any start-up "starting"
        # status (which comes before it on iopub) is behind us.
        overall = (
            deadline
            if deadline.timeout is not None
            else Deadline(datetime.timedelta(seconds=self._heartbeat_timeout))
        )
        while True:
            if overall.expired():
                if deadline.timeout is None:
                    self._abandon("kernel never became ready")
                    raise NubladoKernelDiedError(
                        self.username,
                        error=f"The kernel did not answer for {self._heartbeat_timeout:.0f}s",
                        status="unresponsive",
                    )
                raise NubladoTimeoutError(
                    "Timed out waiting for the kernel to become ready", self.username
                )
            probe_id = self._send_probe("shell", overall)
            if self._await_probe(probe_id, overall):
                self._ready = True
                self._logger.debug("Kernel is ready")
                return

    def _await_probe(self, probe_id: str, deadline: Deadline) -> bool:
        replied = idle = False
        retry_at = time.monotonic() + _PROBE_RETRY
        while not (replied and idle):
            now = time.monotonic()
            if deadline.expired() or now >= retry_at:
                return False
            # A reply is awaited: acknowledged promptly, as for execute. After
            # a reconnect the probe may be lost: send another.
            reconnects = self._reconnects
            msg = self._recv(retry_at - now, deadline, None)
            if self._reconnects != reconnects:
                return False
            if msg is None or msg.parent_id != probe_id:
                continue
            if msg.msg_type == "kernel_info_reply":
                replied = True
                self._kernel_process = msg.header.get("session")
                # The reply is in; give the idle status its own full wait.
                retry_at = time.monotonic() + _PROBE_RETRY
            elif _is_idle(msg):
                idle = True
        return True


def _rate_limit_notice(stderr: str) -> bool:
    return "IOPub data rate exceeded" in stderr or "IOPub message rate exceeded" in stderr


def _is_idle(msg: KernelMessage) -> bool:
    return msg.msg_type == "status" and msg.content.get("execution_state") == "idle"
