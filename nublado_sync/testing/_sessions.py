"""The fake lab's sessions and kernels: their REST API and the kernel WebSocket.

Each session has a `~nublado_sync.testing._kernel.MockKernel`; the
WebSocket on ``api/kernels/<id>/channels`` speaks the
``v1.kernel.websocket.jupyter.org`` framing when the client offers it and
the legacy JSON one otherwise, as jupyter_server does.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional

from .._exceptions import NubladoProtocolError
from .._messages import KernelMessage
from .._wire import V1_SUBPROTOCOL, decode_legacy, decode_v1, encode_legacy, encode_v1
from ._deployment import Deployment
from ._kernel import MockKernel
from ._server import Request, Response
from ._state import (
    MockJupyterAction,
    MockJupyterLabSession,
    OpenSession,
    UserRecord,
    iso_now,
)
from ._websocket import (
    CLOSE_INVALID_DATA,
    CLOSE_UNSUPPORTED_DATA,
    OP_BINARY,
    OP_TEXT,
    ServerWebSocket,
    WebSocketClosedError,
)

__all__ = ["KernelSocket", "SessionRoutes"]


class KernelSocket:
    """A kernel's WebSocket connection, encoding messages for its protocol."""

    def __init__(self, ws: ServerWebSocket, *, v1: bool) -> None:
        self.ws = ws
        self.v1 = v1

    def send_message(self, msg: KernelMessage) -> None:
        """Send a message to the client; a closed socket drops it."""
        try:
            if self.v1:
                self.ws.send_binary(encode_v1(msg))
            else:
                self.ws.send_text(encode_legacy(msg))
        except WebSocketClosedError:
            pass

    def close(self) -> None:
        """Close the connection."""
        self.ws.close()

    def decode(self, opcode: int, data: bytes) -> KernelMessage:
        """Decode a frame from the client."""
        if self.v1:
            if opcode != OP_BINARY:
                raise ValueError("text frame on a v1 connection")
            return decode_v1(data)
        return decode_legacy(data.decode() if opcode == OP_TEXT else data)


def session_model(session: OpenSession) -> Dict[str, Any]:
    """Return jupyter_server's model of a session."""
    info = session.info
    return {
        "id": info.session_id,
        "path": info.path,
        "name": info.name,
        "type": info.type,
        "kernel": kernel_model(session.kernel),
        "notebook": {"path": info.path, "name": info.name},
    }


def kernel_model(kernel: MockKernel) -> Dict[str, Any]:
    """Return jupyter_server's model of a kernel."""
    return {
        "id": kernel.kernel_id,
        "name": kernel.name,
        "last_activity": iso_now(),
        "execution_state": kernel.execution_state,
        "connections": kernel.connections,
    }


class SessionRoutes:
    """A lab's ``api/sessions`` and ``api/kernels`` routes.

    Parameters
    ----------
    deployment
        The shared state.
    """

    def __init__(self, deployment: Deployment) -> None:
        self.d = deployment

    def sessions_api(self, request: Request, record: UserRecord, parts: List[str]) -> Response:
        """Answer ``api/sessions/<parts>`` for a logged-in user."""
        d = self.d
        method = request.method
        if not parts or parts == [""]:
            if method == "GET":
                with d.lock:
                    models = [session_model(s) for s in record.sessions.values()]
                return Response.json(200, models)
            if method == "POST":
                return self._create_session(request, record)
            return Response.error(405, "Method not allowed")
        session_id = parts[0]
        with d.lock:
            session = record.sessions.get(session_id)
        if session is None:
            return Response.error(404, f"Session not found: {session_id}")
        if method == "GET":
            return Response.json(200, session_model(session))
        if method == "DELETE":
            if MockJupyterAction.DELETE_SESSION in record.fail:
                return Response.error(500, "Deleting the session failed (fail_on DELETE_SESSION)")
            with d.lock:
                record.sessions.pop(session_id, None)
            session.kernel.shutdown()
            return Response(204)
        return Response.error(405, "Method not allowed")

    def _create_session(self, request: Request, record: UserRecord) -> Response:
        if MockJupyterAction.CREATE_SESSION in record.fail:
            return Response.error(500, "Creating the session failed (fail_on CREATE_SESSION)")
        try:
            body = json.loads(request.body or b"null")
            kernel = body.get("kernel") or {}
            path, kind = body["path"], body["type"]
            if (
                not isinstance(kernel, dict)
                or not isinstance(path, str)
                or not isinstance(kind, str)
            ):
                raise TypeError("bad field types")
        except (ValueError, KeyError, TypeError, AttributeError):
            return Response.error(400, "A session needs a JSON body with path, type and kernel")
        info = MockJupyterLabSession(
            kernel_name=str(kernel.get("name") or "python3"),
            name=str(body.get("name") or ""),
            path=path,
            type=kind,
        )
        session = OpenSession(info, MockKernel(info.kernel_id, info.kernel_name, self.d.lookup))
        with self.d.lock:
            record.sessions[info.session_id] = session
        return Response.json(201, session_model(session))

    def kernels_api(self, request: Request, record: UserRecord, parts: List[str]) -> Response:
        """Answer ``api/kernels/<parts>`` for a logged-in user."""
        d = self.d
        method = request.method
        with d.lock:
            kernels = {s.kernel.kernel_id: s for s in record.sessions.values()}
        if not parts or parts == [""]:
            if method == "GET":
                return Response.json(200, [kernel_model(s.kernel) for s in kernels.values()])
            return Response.error(405, "Method not allowed")
        session = kernels.get(parts[0])
        if session is None:
            return Response.error(404, f"Kernel does not exist: {parts[0]}")
        tail = "/".join(parts[1:])
        if tail == "" and method == "GET":
            return Response.json(200, kernel_model(session.kernel))
        if tail == "" and method == "DELETE":
            if MockJupyterAction.DELETE_KERNEL in record.fail:
                return Response.error(500, "Deleting the kernel failed (fail_on DELETE_KERNEL)")
            with d.lock:
                record.sessions.pop(session.info.session_id, None)
            session.kernel.shutdown()
            return Response(204)
        if tail == "interrupt" and method == "POST":
            session.kernel.interrupt()
            return Response(204)
        if tail == "channels" and method == "GET":
            kernel = session.kernel
            return Response(
                101,
                websocket=lambda ws, protocol: self._serve_kernel(ws, protocol, kernel),
                subprotocols=[V1_SUBPROTOCOL],
            )
        return Response.error(404, "Not found")

    def _serve_kernel(
        self, ws: ServerWebSocket, protocol: Optional[str], kernel: MockKernel
    ) -> None:
        d = self.d
        connection = KernelSocket(ws, v1=protocol == V1_SUBPROTOCOL)
        with d.lock:
            d.sockets.add(connection)
        kernel.attach(connection)
        try:
            while not d.stopping.is_set():
                received = ws.receive()
                if received is None:
                    return
                opcode, data = received
                try:
                    msg = connection.decode(opcode, data)
                except ValueError:
                    ws.close(CLOSE_UNSUPPORTED_DATA, "Expected binary v1 frames")
                    return
                except (NubladoProtocolError, UnicodeDecodeError) as e:
                    ws.close(CLOSE_INVALID_DATA, f"Undecodable message: {e}"[:120])
                    return
                kernel.handle(connection, msg)
        finally:
            kernel.detach(connection)
            with d.lock:
                d.sockets.discard(connection)
