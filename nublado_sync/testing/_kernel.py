"""A fake Jupyter kernel: Jupyter messages in, Python executed in-process.

Each `MockKernel` has its own namespace, so variables persist from one
execution to the next, and its own worker thread, which takes shell
requests in order as a real kernel does. Control requests (kernel info,
interrupts) are answered at once, even while code runs. Output written to
``sys.stdout`` and ``sys.stderr`` by the executing thread becomes ``stream``
messages as it is written.

.. warning::

   Code without a registered result is executed with `exec` in the test
   process. Never expose a mock to untrusted clients.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import datetime
import linecache
import platform
import queue
import sys
import threading
import traceback
import uuid
from dataclasses import dataclass
from types import CodeType, TracebackType
from typing import (
    Any,
    Callable,
    Dict,
    Iterator,
    List,
    Optional,
    Protocol,
    TextIO,
    Tuple,
    Union,
)

from .._messages import PROTOCOL_VERSION, KernelMessage

__all__ = [
    "KernelConnection",
    "MockKernel",
    "RegisteredResult",
    "StdinNotImplementedError",
    "run_captured",
]

# A buffered stream is sent once it holds a newline or this many characters.
_STREAM_FLUSH = 8192


class StdinNotImplementedError(RuntimeError):
    """Raised by ``input()`` in the mock kernel, as in a real one without stdin."""


@dataclass(frozen=True)
class RegisteredResult:
    """What the kernel answers for one registered piece of code.

    Parameters
    ----------
    result
        Standard output to send, or an exception to report as the error.
    delay
        Seconds to wait first; an interrupt ends the wait.
    """

    result: Union[str, BaseException]
    delay: Optional[float] = None


class KernelConnection(Protocol):
    """One client connection of a kernel (a WebSocket)."""

    def send_message(self, msg: KernelMessage) -> None:
        """Send a message; a closed connection drops it silently."""

    def close(self) -> None:
        """Close the connection."""


Lookup = Callable[[str], Optional[RegisteredResult]]


def _now() -> str:
    return datetime.datetime.now(tz=datetime.timezone.utc).isoformat()


class _Router:
    """Sends what a thread writes to ``sys.stdout``/``sys.stderr`` to a cell.

    While any kernel executes code, ``sys.stdout`` and ``sys.stderr`` are
    proxies that look up the current thread's cell and fall back to the
    streams they replaced for every other thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._local = threading.local()
        # The proxy installed per stream name ("stdout", "stderr").
        self._proxies: Dict[str, _ProxyStream] = {}

    def target(self) -> Optional[_CellOutput]:
        cell: Optional[_CellOutput] = getattr(self._local, "cell", None)
        return cell

    def _install(self) -> None:
        # Checked at every cell, not only the first of several running at
        # once: someone (a test runner's capture, between two tests) may
        # have replaced our proxy while another cell still ran. The new
        # proxy then falls back to what is there now.
        for name in ("stdout", "stderr"):
            current = getattr(sys, name)
            if current is not self._proxies.get(name):
                proxy = _ProxyStream(self, name, current)
                self._proxies[name] = proxy
                setattr(sys, name, proxy)

    def _uninstall(self) -> None:
        for name, proxy in self._proxies.items():
            # Put back only what is still ours.
            if getattr(sys, name) is proxy:
                setattr(sys, name, proxy.fallback)
        self._proxies = {}

    @contextlib.contextmanager
    def route(self, cell: _CellOutput) -> Iterator[None]:
        with self._lock:
            self._install()
            self._depth += 1
        self._local.cell = cell
        try:
            yield
        finally:
            self._local.cell = None
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._uninstall()


class _ProxyStream:
    """Stands in for sys.stdout or sys.stderr while cells run."""

    def __init__(self, router: _Router, name: str, fallback: TextIO) -> None:
        self._router = router
        self._name = name
        self._fallback = fallback

    @property
    def fallback(self) -> TextIO:
        """The stream written to by threads that run no cell."""
        return self._fallback

    def write(self, text: str) -> int:
        cell = self._router.target()
        if cell is None:
            return self._fallback.write(text)
        return cell.write(self._name, text)

    def flush(self) -> None:
        cell = self._router.target()
        if cell is None:
            self._fallback.flush()
        else:
            cell.flush()

    def writelines(self, lines: List[str]) -> None:
        for line in lines:
            self.write(line)

    def isatty(self) -> bool:
        return False if self._router.target() is not None else self._fallback.isatty()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fallback, name)


_ROUTER = _Router()


class _CellOutput:
    """Buffers one execution's stdout and stderr into ``stream`` messages."""

    def __init__(self, publish: Callable[[str, Dict[str, Any]], None]) -> None:
        self._publish = publish
        self._name: Optional[str] = None
        self._buffer: List[str] = []
        self._size = 0
        self._lock = threading.Lock()

    def write(self, name: str, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        with self._lock:
            if self._name != name:
                self._flush()
                self._name = name
            self._buffer.append(text)
            self._size += len(text)
            if "\n" in text or self._size >= _STREAM_FLUSH:
                self._flush()
        return len(text)

    def flush(self) -> None:
        with self._lock:
            self._flush()

    def _flush(self) -> None:
        if self._buffer and self._name is not None:
            text = "".join(self._buffer)
            self._buffer, self._size = [], 0
            self._publish("stream", {"name": self._name, "text": text})


def run_captured(code: str, namespace: Dict[str, Any]) -> str:
    """Execute code in a namespace and return what it wrote to standard output.

    Standard error is passed on to the real ``sys.stderr``; exceptions
    propagate.
    """
    captured: Dict[str, List[str]] = {"stdout": [], "stderr": []}

    def collect(msg_type: str, content: Dict[str, Any]) -> None:
        captured[content["name"]].append(content["text"])

    cell = _CellOutput(collect)
    try:
        with _ROUTER.route(cell):
            try:
                exec(code, namespace)  # noqa: S102 - the mock's purpose
            finally:
                cell.flush()
    finally:
        if captured["stderr"]:
            sys.stderr.write("".join(captured["stderr"]))
    return "".join(captured["stdout"])


def _fresh_namespace() -> Dict[str, Any]:
    def input_(prompt: str = "") -> str:
        raise StdinNotImplementedError(
            "raw_input was called, but this frontend does not support input requests."
        )

    return {"__name__": "__main__", "__builtins__": builtins, "input": input_}


def _error_content(error: BaseException, tb: Optional[TracebackType]) -> Dict[str, Any]:
    lines = traceback.format_exception(type(error), error, tb)
    return {
        "ename": type(error).__name__,
        "evalue": str(error),
        "traceback": [line.rstrip("\n") for line in lines],
    }


class MockKernel:
    """One fake kernel with its namespace and worker thread.

    Parameters
    ----------
    kernel_id
        Id of the kernel.
    name
        Kernel name the session asked for.
    lookup
        Returns the registered result for a piece of code, if any.
    """

    def __init__(self, kernel_id: str, name: str, lookup: Lookup) -> None:
        self.kernel_id = kernel_id
        self.name = name
        self.namespace = _fresh_namespace()
        self.namespace["display"] = self._display
        self.execution_count = 0
        self.execution_state = "idle"
        self._lookup = lookup
        self._session = uuid.uuid4().hex
        self._connections: List[KernelConnection] = []
        self._lock = threading.Lock()
        self._queue: queue.Queue[Optional[Tuple[KernelConnection, KernelMessage]]]
        self._queue = queue.Queue()
        self._interrupted = threading.Event()
        self._stopped = threading.Event()
        # Set while user code runs, so an interrupt may raise in it.
        self._running_user_code = False
        self._user_lock = threading.Lock()
        self._current: Optional[KernelMessage] = None
        self._cell_number = 0
        self._thread = threading.Thread(
            target=self._work, name=f"mock-kernel-{kernel_id[:8]}", daemon=True
        )
        self._thread.start()

    def __repr__(self) -> str:
        return f"<MockKernel id={self.kernel_id!r} name={self.name!r} {self.execution_state}>"

    # Connections

    def attach(self, connection: KernelConnection) -> None:
        """Add a connection: it gets iopub messages from now on."""
        with self._lock:
            self._connections.append(connection)

    def detach(self, connection: KernelConnection) -> None:
        """Remove a connection."""
        with self._lock:
            if connection in self._connections:
                self._connections.remove(connection)

    @property
    def connections(self) -> int:
        """Number of attached connections."""
        with self._lock:
            return len(self._connections)

    # Requests

    def handle(self, connection: KernelConnection, msg: KernelMessage) -> None:
        """Take one message from a client.

        Shell requests are queued for the worker thread; control requests
        are answered at once. Other channels are ignored.
        """
        if self._stopped.is_set():
            return
        if msg.channel == "control":
            self._control(connection, msg)
        elif msg.channel == "shell":
            self._queue.put((connection, msg))

    def interrupt(self) -> None:
        """Interrupt what runs now, as SIGINT would.

        A registered delay ends at once. Executed code gets a
        ``KeyboardInterrupt`` at its next Python instruction: a blocking call
        such as ``time.sleep`` finishes first.
        """
        self._interrupted.set()
        with self._user_lock:
            if self._running_user_code and self._thread.ident is not None:
                _set_async_exc(self._thread.ident, KeyboardInterrupt)

    def shutdown(self) -> None:
        """Stop the kernel and close its connections."""
        self._stopped.set()
        self.interrupt()
        self._queue.put(None)
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self.execution_state = "dead"

    # Messages

    def _message(
        self, parent: KernelMessage, channel: str, msg_type: str, content: Dict[str, Any]
    ) -> KernelMessage:
        header = {
            "msg_id": uuid.uuid4().hex,
            "msg_type": msg_type,
            "session": self._session,
            "username": parent.header.get("username", "kernel"),
            "version": PROTOCOL_VERSION,
            "date": _now(),
        }
        return KernelMessage(channel, header, dict(parent.header), {}, content)

    def _reply(
        self,
        connection: KernelConnection,
        parent: KernelMessage,
        msg_type: str,
        content: Dict[str, Any],
    ) -> None:
        connection.send_message(self._message(parent, parent.channel, msg_type, content))

    def _publish(self, parent: KernelMessage, msg_type: str, content: Dict[str, Any]) -> None:
        msg = self._message(parent, "iopub", msg_type, content)
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            connection.send_message(msg)

    def _status(self, parent: KernelMessage, state: str) -> None:
        self.execution_state = state
        self._publish(parent, "status", {"execution_state": state})

    def _kernel_info(self) -> Dict[str, Any]:
        return {
            "status": "ok",
            "protocol_version": PROTOCOL_VERSION,
            "implementation": "nublado_sync.testing",
            "implementation_version": "1",
            "language_info": {
                "name": "python",
                "version": platform.python_version(),
                "mimetype": "text/x-python",
                "file_extension": ".py",
            },
            "banner": f"Mock kernel (Python {platform.python_version()})",
            "help_links": [],
        }

    def _control(self, connection: KernelConnection, msg: KernelMessage) -> None:
        msg_type = msg.msg_type
        if msg_type == "kernel_info_request":
            self._reply(connection, msg, "kernel_info_reply", self._kernel_info())
        elif msg_type == "interrupt_request":
            self.interrupt()
            self._reply(connection, msg, "interrupt_reply", {"status": "ok"})
        elif msg_type == "shutdown_request":
            restart = bool(msg.content.get("restart", False))
            self._reply(connection, msg, "shutdown_reply", {"status": "ok", "restart": restart})

    # The worker

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._stopped.is_set():
                return
            connection, msg = item
            try:
                self._shell(connection, msg)
            except Exception:  # pragma: no cover - a bug in the mock itself
                traceback.print_exc()

    def _shell(self, connection: KernelConnection, msg: KernelMessage) -> None:
        if msg.msg_type == "execute_request":
            self._execute(connection, msg)
        elif msg.msg_type == "kernel_info_request":
            self._status(msg, "busy")
            self._reply(connection, msg, "kernel_info_reply", self._kernel_info())
            self._status(msg, "idle")

    def _abort_queued(self) -> None:
        # Like ipykernel after an error: execute requests that are already
        # waiting are answered "aborted", before the failed request's idle
        # status, so a request sent after that status always runs.
        kept: List[Optional[Tuple[KernelConnection, KernelMessage]]] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[1].msg_type == "execute_request":
                connection, msg = item
                self._status(msg, "busy")
                self._reply(connection, msg, "execute_reply", {"status": "aborted"})
                self._status(msg, "idle")
            else:
                kept.append(item)
        for item in kept:
            self._queue.put(item)

    def _execute(self, connection: KernelConnection, msg: KernelMessage) -> None:
        content = msg.content
        code = content.get("code", "")
        if not isinstance(code, str):
            code = str(code)
        silent = bool(content.get("silent", False))
        if content.get("store_history", True) and not silent:
            self.execution_count += 1
        count = self.execution_count
        self._interrupted.clear()
        self._current = msg
        self._status(msg, "busy")
        if not silent:
            self._publish(msg, "execute_input", {"code": code, "execution_count": count})
        error = self._run(msg, code, count)
        self._current = None
        if error is None:
            reply: Dict[str, Any] = {
                "status": "ok",
                "execution_count": count,
                "user_expressions": {},
                "payload": [],
            }
        else:
            self._publish(msg, "error", error)
            reply = {"status": "error", "execution_count": count, **error}
        self._reply(connection, msg, "execute_reply", reply)
        if error is not None and content.get("stop_on_error", True):
            self._abort_queued()
        self._status(msg, "idle")

    def _run(self, msg: KernelMessage, code: str, count: int) -> Optional[Dict[str, Any]]:
        registered = self._lookup(code)
        if registered is not None:
            return self._run_registered(msg, registered)
        return self._run_code(msg, code, count)

    def _run_registered(
        self, msg: KernelMessage, registered: RegisteredResult
    ) -> Optional[Dict[str, Any]]:
        if registered.delay and self._interrupted.wait(registered.delay):
            return _error_content(KeyboardInterrupt(), None)
        result = registered.result
        if isinstance(result, BaseException):
            return _error_content(result, result.__traceback__)
        if result:
            self._publish(msg, "stream", {"name": "stdout", "text": result})
        return None

    def _compile(self, code: str) -> Tuple[CodeType, Optional[CodeType]]:
        self._cell_number += 1
        filename = f"<mock-cell-{self.kernel_id[:8]}-{self._cell_number}>"
        # Registered with linecache so tracebacks show the cell's lines.
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        tree = ast.parse(code, filename, "exec")
        last: Optional[CodeType] = None
        final = tree.body[-1] if tree.body else None
        if isinstance(final, ast.Expr):
            tree.body.pop()
            last = compile(ast.Expression(final.value), filename, "eval")
        return compile(tree, filename, "exec"), last

    def _run_code(self, msg: KernelMessage, code: str, count: int) -> Optional[Dict[str, Any]]:
        try:
            body, last = self._compile(code)
        except (SyntaxError, ValueError) as e:
            return _error_content(e, None)
        cell = _CellOutput(lambda msg_type, content: self._publish(msg, msg_type, content))
        value: Any = None
        error: Optional[Dict[str, Any]] = None
        with _ROUTER.route(cell):
            try:
                try:
                    self._enter_user_code()
                    exec(body, self.namespace)  # noqa: S102 - the mock's purpose
                    if last is not None:
                        value = eval(last, self.namespace)  # noqa: S307
                except BaseException as e:  # the kernel reports everything
                    # Drop our own frame: the traceback starts in the cell.
                    tb = e.__traceback__.tb_next if e.__traceback__ else None
                    error = _error_content(e, tb)
                finally:
                    self._leave_user_code()
            except KeyboardInterrupt as e:
                # An interrupt that arrived just as the code finished.
                error = error or _error_content(e, None)
            cell.flush()
        if error is None and value is not None:
            self.namespace["_"] = value
            self._publish(
                msg,
                "execute_result",
                {"data": {"text/plain": repr(value)}, "metadata": {}, "execution_count": count},
            )
        return error

    def _enter_user_code(self) -> None:
        with self._user_lock:
            self._running_user_code = True
        if self._interrupted.is_set():
            raise KeyboardInterrupt

    def _leave_user_code(self) -> None:
        with self._user_lock:
            self._running_user_code = False
            if self._thread.ident is not None:
                # Drop an interrupt that was raised too late to matter.
                _set_async_exc(self._thread.ident, None)

    def _display(self, *objects: Any) -> None:
        """Stand-in for IPython's ``display``: a ``display_data`` per object."""
        parent = self._current
        if parent is None:
            return
        cell = _ROUTER.target()
        if cell is not None:
            cell.flush()  # what was printed before comes first
        for obj in objects:
            content = {"data": {"text/plain": repr(obj)}, "metadata": {}, "transient": {}}
            self._publish(parent, "display_data", content)


def _set_async_exc(thread_id: int, exc: Optional[type]) -> None:
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )
