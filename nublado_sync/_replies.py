"""Waiting for the kernel: readiness probes and a request's reply.

`ReplyWaiter` reads a `KernelLink` until a request is answered. While it
waits it checks that the kernel still answers (a ``kernel_info_request``
on the control channel after a quiet spell), tells a restarted kernel by
its new process id, and after a reconnect sends a barrier request on the
shell channel whose answer says that whatever else was coming has come.
"""

from __future__ import annotations

import datetime
import time
from typing import Callable, NoReturn, Optional, Union

from ._deadline import Deadline
from ._exceptions import (
    NubladoExecutionTimeoutError,
    NubladoKernelDiedError,
    NubladoOutputLostError,
    NubladoTimeoutError,
    NubladoWebSocketError,
)
from ._execution import ExecutionCollector
from ._kernel_link import KernelLink
from ._logging import Logger, debug_enabled
from ._messages import KernelMessage, make_request
from ._models import CodeContext
from ._pipeline import PipelineCollector
from ._reconnect import Continuity

__all__ = ["ReplyWaiter"]

# Longest wait for the lab's answer to "do you still have the kernel?".
_KERNEL_CHECK_TIMEOUT = 10.0

KernelCheck = Callable[[float], Optional[bool]]
"""Asks the lab within the given seconds whether it still has the kernel."""

# How long one readiness probe waits before another is sent: the first
# requests to a starting kernel can be lost before its channels connect.
_PROBE_RETRY = 1.0


class ReplyWaiter:
    """Waits over a link for the kernel to be ready and for replies.

    Parameters
    ----------
    link
        The session's connection to the kernel.
    logger
        Logger bound to the session.
    heartbeat_interval
        Seconds without a message before the kernel is probed.
    heartbeat_timeout
        Seconds a probe may stay unanswered before the kernel counts as dead.
    kernel_check
        Asks the lab, within the given seconds, whether it still has the
        kernel (`None`: it did not say); `None` when the session cannot ask.
    """

    def __init__(
        self,
        link: KernelLink,
        *,
        logger: Logger,
        heartbeat_interval: float,
        heartbeat_timeout: float,
        kernel_check: Optional[KernelCheck] = None,
    ) -> None:
        self.username = link.username
        self._kernel_check = kernel_check
        self._link = link
        self._client_id = link.client_id
        self._logger = logger
        self._heartbeat_interval = heartbeat_interval
        self._heartbeat_timeout = heartbeat_timeout
        # Whether the kernel answered a readiness probe since it (re)started.
        self.ready = False
        # The kernel process's own session id, from its message headers; a
        # different one later means the server restarted the kernel.
        self._kernel_process: Optional[str] = None

    def prepare(self, deadline: Deadline) -> None:
        """Make the connection and the kernel ready for a request.

        Reads what came while no call was reading, reconnects a connection
        found dropped meanwhile, and waits for a kernel not known ready.
        """
        self._link.socket.drain()
        if self._link.socket.dropped:
            # Found dropped while idle: reconnect before anything else.
            self._link.reconnect(deadline, self._link.socket_error("dropped while idle"))
        if not self.ready:
            self.await_ready(deadline)

    def await_ready(self, deadline: Deadline) -> None:
        """Wait until the kernel answers a ``kernel_info_request`` and is idle."""
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
                    self._link.abandon("kernel never became ready")
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
                self.ready = True
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
            reconnects = self._link.reconnects
            msg = self._link.recv(retry_at - now, deadline, None)
            if self._link.reconnects != reconnects:
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

    def await_reply(
        self, collector: Union[ExecutionCollector, PipelineCollector], deadline: Deadline
    ) -> None:
        """Read until the collector has its reply (see the module docstring).

        Raises `NubladoTimeoutError` at the deadline, `NubladoKernelDiedError`
        for a dead or restarted kernel, `NubladoOutputLostError` when a
        reconnect lost the reply, and what the link raises.
        """
        debug = debug_enabled(self._logger)
        continuity = Continuity()
        if isinstance(collector, PipelineCollector):
            collector.continuity = continuity
        heard_at = time.monotonic()
        probe_id: Optional[str] = None
        probe_sent_at = 0.0
        asked_lab = False
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
                asked_lab = False
            if (
                probe_id is not None
                and not asked_lab
                and now - probe_sent_at >= self._heartbeat_interval
            ):
                # The probe is late: a kernel shut down behind the session's
                # back leaves the WebSocket open and silent, so ask the lab
                # (once per probe) rather than wait out the whole timeout.
                asked_lab = True
                # Within what is left of the heartbeat's own timeout: the
                # lab's answer must not outlast the verdict it speeds up.
                self._check_kernel_exists(
                    deadline.bound(probe_sent_at + self._heartbeat_timeout - now)
                )
            if probe_id is not None and now - probe_sent_at >= self._heartbeat_timeout:
                self._link.abandon("kernel stopped answering")
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
            elif not asked_lab and self._kernel_check is not None:
                wait = probe_sent_at + self._heartbeat_interval - now
            else:
                wait = probe_sent_at + self._heartbeat_timeout - now
            if isinstance(collector, PipelineCollector):
                settle = collector.next_settle(now)
                wait = wait if settle is None else min(wait, settle)
            reconnects = continuity.reconnects
            msg = self._link.recv(wait, deadline, continuity)
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
            ours = parent is not None and collector.owns(parent)
            if ours and msg.msg_id is not None:
                continuity.ours(msg.msg_id)
            if ours or (parent is not None and parent in (probe_id, barrier_id)):
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
        msg_id: str = request.header["msg_id"]
        try:
            self._link.socket.send(request, deadline.bound(self._heartbeat_timeout))
        except NubladoWebSocketError:
            if not self._link.socket.dropped:
                raise
            # Lost with the connection, like one sent just before the drop:
            # the next read reconnects, and a probe follows on the new
            # connection (or the reconnect gives up, saying why).
        return msg_id

    def _check_kernel_exists(self, seconds: float) -> None:
        if self._kernel_check is None or seconds <= 0:
            return
        if self._kernel_check(min(seconds, _KERNEL_CHECK_TIMEOUT)) is False:
            self._link.abandon("the lab no longer has the kernel")
            raise NubladoKernelDiedError(
                self.username,
                error=(
                    "The lab no longer has the kernel: it was shut down or died for good"
                    " while running the code"
                ),
                status="gone",
            )

    def _kernel_died(self, detail: str) -> NubladoKernelDiedError:
        # The server restarts a dead kernel under the same id; the next
        # request must first wait until the new kernel answers.
        self.ready = False
        self._logger.warning("Kernel died while running code", detail=detail)
        return NubladoKernelDiedError(self.username, error=detail, status="dead")

    def raise_timeout(
        self,
        code: str,
        context: Optional[CodeContext],
        deadline: Deadline,
        started_at: datetime.datetime,
        collector: ExecutionCollector,
        cause: Optional[BaseException] = None,
    ) -> NoReturn:
        """Abandon the call that ran past its deadline and raise the timeout."""
        self._link.abandon("timed out")
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


def _is_idle(msg: KernelMessage) -> bool:
    return msg.msg_type == "status" and msg.content.get("execution_state") == "idle"
