"""The kernel session: running code over an open kernel WebSocket.

The session's public calls and its lifecycle live here; the connection
that reconnects is `nublado_sync._kernel_link`, waiting for the kernel's
answers is `nublado_sync._replies`, and the queued-cells loop is
`nublado_sync._queued`.
"""

from __future__ import annotations

import datetime
import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Sequence, Union

from ._acks import AckPolicy, as_ack_policy
from ._arguments import check_duration
from ._deadline import Deadline
from ._exceptions import (
    NubladoError,
    NubladoExecutionError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoSessionClosedError,
    NubladoTimeoutError,
    NubladoUsageError,
    NubladoWebSocketError,
)
from ._execution import ExecutionCollector, MessageCallback, OutputCallback
from ._kernel_link import KernelLink, Opener
from ._logging import Logger, default_logger
from ._messages import execute_request
from ._models import CodeContext, ExecutionResult
from ._pipeline import QueuedCell, ResultCallback
from ._queued import run_queued
from ._reasons import one_line
from ._reconnect import DEFAULT_RECONNECT, ReconnectPolicy, check_reconnect_policy
from ._replies import KernelCheck, ReplyWaiter

if TYPE_CHECKING:
    import websocket

__all__ = ["JupyterLabSession"]


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
        How to acknowledge the kernel's messages early while a reply is
        awaited, so that the server's TCP stack sends the next message at
        once instead of waiting for the client's delayed ACK (the lab leaves
        Nagle's algorithm on). This cuts the round trip of a small cell from
        about 50 ms to about 12 ms. `True` (the default) for `AckPolicy`'s
        defaults, `False` to send nothing the server did not ask for, or an
        `AckPolicy`.
    reconnect
        How to reconnect when the WebSocket drops while a call runs or
        while the session is idle (see `ReconnectPolicy`); `None` to report
        a drop at once. Only a session opened by `JupyterLabSessionManager`
        can reconnect: one wrapping the caller's WebSocket cannot.

    Raises
    ------
    NubladoUsageError
        ``prompt_acks`` or ``reconnect`` is of the wrong type.
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
        prompt_acks: Union[bool, AckPolicy] = True,
        reconnect: Optional[ReconnectPolicy] = DEFAULT_RECONNECT,
        _client_id: Optional[str] = None,
        _opener: Optional[Opener] = None,
        _kernel_check: Optional[KernelCheck] = None,
    ) -> None:
        check_reconnect_policy(reconnect, username)
        acks = as_ack_policy(prompt_acks, username)
        self.username = username
        self.session_id = session_id
        self._logger = (logger or default_logger()).bind(user=username, session=session_id)
        heartbeat_interval_s = _seconds(heartbeat_interval, "heartbeat_interval") or 3.0
        heartbeat_timeout_s = _seconds(heartbeat_timeout, "heartbeat_timeout") or 60.0
        keepalive_interval_s = _seconds(keepalive_interval, "keepalive_interval")
        # The header's ``session`` names this client connection (the
        # manager uses the same id as the WebSocket's ``session_id``, so a
        # reconnect is the same client to the server); the server session
        # id names the server-side record.
        self._client_id = _client_id or uuid.uuid4().hex
        self._link = KernelLink(
            socket,
            username=username,
            client_id=self._client_id,
            logger=self._logger,
            keepalive_interval=keepalive_interval_s,
            max_message_size=max_message_size,
            acks=acks,
            heartbeat_timeout=heartbeat_timeout_s,
            reconnect=reconnect,
            opener=_opener,
        )
        self._waiter = ReplyWaiter(
            self._link,
            logger=self._logger,
            heartbeat_interval=heartbeat_interval_s,
            heartbeat_timeout=heartbeat_timeout_s,
            kernel_check=_kernel_check,
        )
        self._in_use = threading.Lock()
        # The thread whose call holds _in_use (threading.get_ident()), if any.
        self._caller: Optional[int] = None

    def __repr__(self) -> str:
        state = f"closed ({self._link.closed_because or 'aborted'})" if self.closed else "open"
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
        """Whether the session is closed (or aborted) and can no longer run code."""
        return self._link.closed_because is not None or self._link.aborted

    @property
    def protocol(self) -> str:
        """The wire encoding in use, ``v1`` or ``legacy``."""
        return "v1" if self._link.socket.is_v1 else "legacy"

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
            Invalid arguments, or another call is using the session (from
            another thread, or from a callback of that call).
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
            Invalid arguments, or another call is using the session (from
            another thread, or from a callback of that call).
        """
        if not isinstance(code, str):
            raise NubladoUsageError(f"code must be a str, not {type(code).__name__}", self.username)
        if context is not None and not isinstance(context, CodeContext):
            raise NubladoUsageError("context must be a CodeContext", self.username)
        deadline = Deadline(timeout if _seconds(timeout, "timeout") else None)
        self._check_open()
        self._claim()
        try:
            with self._link.holding():
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
            self._unclaim()

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
        self._link.send_interrupt()

    def abort(self, grace: Optional[datetime.timedelta] = None) -> None:
        """Stop this session from another thread: interrupt the kernel and cut the connection.

        Made for a thread that supervises others (the batch runner on
        Ctrl-C). A call running in another thread ends, and every later
        call raises `NubladoSessionClosedError`. The caller that owns the
        session still closes it (its session manager deletes it, which
        shuts the kernel down). Safe to call more than once: a second call
        cuts the connection at once. Called from inside the session's own
        call (an ``on_output`` callback, say), it cuts at once too: that
        call cannot read the kernel's answers while it waits.

        Parameters
        ----------
        grace
            How long a call running in another thread may go on reading the
            kernel's answers to the interrupt before the connection is cut:
            the interrupted cell's ``KeyboardInterrupt``, and the queued
            cells the kernel aborts behind it (see `execute_notebook`), so
            that call ends as a failed cell would, with what ran so far,
            and no queued cell is left to the kernel's shutdown. `None`, the
            default, cuts at once: the call ends with
            `NubladoSessionClosedError` whatever the kernel does. Returns
            once the call ended, or the grace passed.

        Raises
        ------
        NubladoUsageError
            ``grace`` is not a positive `datetime.timedelta` or `None`.
        """
        wait = _seconds(grace, "grace")
        if self._link.aborted:
            # Again (a second Ctrl-C): no more waiting.
            self._link.socket.cut()
            return
        self._link.mark_aborted()
        if self._link.socket.connected:
            try:
                self._link.send_interrupt()
            except NubladoError:
                self._logger.debug("Could not interrupt the kernel", exc_info=True)
        # The call in flight holds _in_use until it ends; a new call is
        # refused (the session is aborted), and one that slipped in
        # meanwhile is ended by the cut.
        # Not from the call's own thread, which would only wait out the grace.
        mine = self._caller == threading.get_ident()
        if wait and not mine and self._in_use.acquire(timeout=wait):
            self._in_use.release()
        self._link.socket.cut()

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
            Another call is using the session (from another thread, or from
            a callback of that call).
        """
        deadline = Deadline(timeout if _seconds(timeout, "timeout") else None)
        self._check_open()
        self._claim()
        try:
            with self._link.holding():
                self._waiter.await_ready(deadline)
        except NubladoError as e:
            self._link.abandon(f"readiness check failed: {type(e).__name__}")
            raise
        finally:
            self._unclaim()

    def close(self) -> None:
        """Close the WebSocket. Safe to call more than once; never raises.

        The kernel and the server session stay; the session manager deletes
        them.
        """
        self._link.close("closed by the caller")

    # Internals

    def _abort(self, error: NubladoError) -> None:
        # From another thread (a cancellation): the call in flight, if any,
        # raises ``error``; the caller's clean-up closes the session. Marked
        # aborted too, so that no reconnect follows the cut.
        self._link.mark_aborted()
        self._link.socket.abort(error)

    def _claim(self) -> None:
        # Refuse rather than queue: two threads interleaving requests on one
        # kernel would each see the other's state.
        if not self._in_use.acquire(blocking=False):
            if self._caller == threading.get_ident():
                raise NubladoUsageError(
                    "The session is already running a call in this thread:"
                    " a callback (on_output, on_message, a notebook hook)"
                    " cannot make another call on the session it runs in",
                    self.username,
                )
            raise NubladoUsageError(
                "The session is already in use by another call;"
                " a session serves one thread at a time",
                self.username,
            )
        self._caller = threading.get_ident()

    def _unclaim(self) -> None:
        self._caller = None
        self._in_use.release()

    def _check_open(self) -> None:
        if self._link.aborted:
            self._link.close("aborted")
        if self._link.closed_because is not None:
            raise NubladoSessionClosedError(
                f"The session is closed ({self._link.closed_because}); open a new one",
                self.username,
            )

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
            self._waiter.prepare(deadline)
            self._link.send_request(request, deadline)
            self._logger.debug("Sent execute_request", msg_id=collector.msg_id)
            with self._link.awaiting_reply(code):
                self._waiter.await_reply(collector, deadline)
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
            self._link.raise_if_aborted(e)
            # A connection that could not be opened again is reported as
            # such, even when the deadline ended the attempts.
            if deadline.expired() and not self._link.gave_up:
                self._waiter.raise_timeout(code, context, deadline, started_at, collector, e)
            self._link.abandon(f"{type(e).__name__}")
            e.context, e.started_at = context or e.context, started_at
            raise
        except NubladoError as e:
            self._link.abandon(type(e).__name__)
            e.context, e.started_at = context or e.context, started_at
            raise
        except BaseException as e:
            # KeyboardInterrupt, or an exception from the output callback.
            self._link.abandon(f"interrupted by {type(e).__name__}")
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
            Another call is using the session (from another thread, or from
            a callback of that call).
        """
        self._check_open()
        self._claim()
        try:
            # holding(), not the socket's lock: a reconnect hands the hold
            # over to the new socket, which is the one to let go of.
            with self._link.holding():
                run_queued(
                    self._link, self._waiter, cells, cell_timeout, on_output, on_result, on_start
                )
        finally:
            self._unclaim()


def _rate_limit_notice(stderr: str) -> bool:
    return "IOPub data rate exceeded" in stderr or "IOPub message rate exceeded" in stderr
