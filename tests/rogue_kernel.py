"""A Jupyter-like server of ours on 127.0.0.1 that misbehaves on command.

It speaks just enough of a Jupyter server for `nublado_sync` (and of a hub
for `NubladoClient` logins) to run its whole session flow, and can produce
on command the faults a healthy server never does:

- ``POST api/sessions`` answers a session and kernel id; ``GET
  api/sessions`` lists them; ``DELETE api/sessions/<id>`` and ``DELETE
  api/kernels/<id>`` remove them and are recorded; ``POST
  api/kernels/<id>/interrupt`` answers 204. Those paths work under any
  prefix (``/user/alice/api/sessions`` too), and ``hub/home`` and ``.../lab``
  answer a page, so a `NubladoClient` with the server as its hub gets
  through ``auth_to_hub``, ``auth_to_lab`` and ``lab_session``.
- ``GET api/kernels/<id>/channels`` is the kernel WebSocket: an RFC 6455
  handshake done by hand, with the ``v1.kernel.websocket.jupyter.org``
  subprotocol when offered (the legacy JSON protocol otherwise), and a fake
  kernel behind it: ``kernel_info_request`` gets its reply and a busy/idle
  pair on iopub, ``execute_request`` gets busy, the output of the code's
  ``print(...)`` lines (see `fake_output`), ``execute_reply`` and idle, and
  ``interrupt_request`` gets ``interrupt_reply``.

A test sets `RogueKernelServer.faults` (a `Faults`) before the client
connects; each field names the fault of one phase of the conversation.
Threads and raw sockets only, every thread named ``rogue-...`` so tests that
count the client's threads can leave the server's out. Nothing here sleeps
to synchronise: stalls wait on the server's stop event, and `close` ends
them all.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import json
import os
import re
import socket
import ssl
import struct
import tempfile
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from nublado_sync._messages import KernelMessage
from nublado_sync._wire import V1_SUBPROTOCOL, decode_legacy, decode_v1, encode_legacy, encode_v1

__all__ = [
    "ERROR_PAGE",
    "EXECUTE_FAULTS",
    "HANDSHAKE_FAULTS",
    "HTTP_FAULTS",
    "PAGE_SECRETS",
    "Faults",
    "RogueKernelServer",
    "fake_output",
    "closed_port",
    "make_certificates",
    "running_rogue_kernel",
    "unresponsive_port",
]

_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TRICKLE_INTERVAL = 0.1
"""Seconds between the messages (or bytes) of every trickling fault."""

HTTP_FAULTS = (
    "hang",  # read the request, never answer
    "close",  # close the connection without an answer
    "500",  # 500 with a JSON error body
    "html_error",  # 500 with an HTML page holding an XSRF token and OAuth state
    "html",  # 200 with an HTML page instead of JSON
    "endless",  # 200 JSON, chunked, one byte every 100 ms for ever
    "endless_error",  # 500, chunked, one byte every 100 ms for ever
    "redirect_loop",  # 302 to itself
    "redirect_out",  # 302 to `RogueKernelServer.redirect_target`
    "no_ids",  # 201 JSON without the kernel id (``create`` only)
)
"""Faults of the REST routes (`Faults.http` maps a route name to one)."""

HANDSHAKE_FAULTS = (
    "hang",  # read the upgrade request, never answer
    "hang_gone",  # never answer, and the kernel list no longer has the kernel
    "hang_gone_once",  # the same for the first handshake; later ones are healthy
    "trickle",  # a 101 answer whose headers never end: one byte every 100 ms
    "close",  # close the connection without an answer
    "garbage",  # bytes that are not HTTP, then close
    "bad_accept",  # 101 with a wrong Sec-WebSocket-Accept
    "refuse_subprotocol",  # 101 without the subprotocol; then legacy JSON
    "wrong_subprotocol",  # 101 with another subprotocol; then legacy JSON
    "403",  # 403 with an HTML page holding an XSRF token
    "redirect",  # 302 to `RogueKernelServer.redirect_target`
    "stall",  # a good 101, then nothing at all (the kernel never answers)
)
"""Faults of the WebSocket handshake (`Faults.handshake`)."""

EXECUTE_FAULTS = (
    "stall",  # busy and one output, then no more for that request (a busy kernel)
    "mute",  # busy and one output, then no answer to anything (a dead connection)
    "stall_mid_frame",  # busy and one output, then half a frame and silence
    "trickle",  # one stream message every 100 ms for ever
    "truncated",  # a v1 frame whose offsets point past its end
    "oversized",  # a v1 frame of `RogueKernelServer.oversize` bytes
    "huge_frame",  # a frame header announcing 64 MiB, then the 64 MiB
    "huge_fragmented",  # a 64 MiB message in 512 KiB fragments
    "garbage",  # a binary frame of random bytes
    "bad_ws_frame",  # a WebSocket frame with reserved bits and opcode set
    "text_garbage",  # a text frame that is not JSON
    "wrong_types",  # a v1 frame whose content is a JSON list
    "close_frame",  # a close frame (1011) mid-execution
    "close_no_frame",  # TCP FIN mid-execution, no close frame
    "reset",  # TCP RST mid-execution
    "deaf",  # stop reading the socket (the client's sends block)
)
"""Faults after an ``execute_request`` arrived (`Faults.execute`)."""

READY_FAULTS = (
    "deaf",  # answer the readiness probe, then never read the socket again
)
"""Faults once the kernel answered its readiness probe (`Faults.ready`)."""

CLOSE_FAULTS = (
    "ignore",  # never answer the client's close frame, keep the socket open
)
"""Faults of the closing handshake (`Faults.close`)."""


@dataclass
class Faults:
    """What to do wrong, per phase; `None` everywhere is a healthy server."""

    http: Dict[str, str] = field(default_factory=dict)
    """Route name (``create``, ``list``, ``delete_session``,
    ``delete_kernel``, ``interrupt``, ``hub_home``, ``lab``) to an
    `HTTP_FAULTS` name."""
    handshake: Optional[str] = None
    ready: Optional[str] = None
    execute: Optional[str] = None
    close: Optional[str] = None
    silent_from: Optional[int] = None
    """Connections from this number on (the first is 1) are accepted and
    never read: no TLS handshake, no HTTP answer."""


@dataclass
class Seen:
    """One HTTP request the server received."""

    method: str
    path: str
    headers: Dict[str, str]


# The fake kernel runs no code: each line ``print(<expr>)`` of the code,
# where <expr> is made of literals, ``+`` and ``*``, prints; the line
# ``rogue.lines(prefix, n)`` prints ``prefix-0`` ... ``prefix-<n-1>`` as n
# stream messages; ``raise`` makes the cell fail.
_PRINT = re.compile(r"^\s*print\((.*)\)\s*$")
_LINES = re.compile(r"^\s*rogue\.lines\((.*)\)\s*$")


def _literal(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _literal(node.left), _literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError("not a literal")


def fake_output(code: str) -> Tuple[List[str], bool]:
    """Return the stream texts the fake kernel prints for ``code``, and if it fails."""
    texts: List[str] = []
    for line in code.splitlines():
        if line.strip() == "raise":
            return texts, True
        match = _PRINT.match(line)
        if match:
            try:
                texts.append(f"{_literal(ast.parse(match.group(1), mode='eval').body)}\n")
            except (ValueError, SyntaxError):
                texts.append(f"{match.group(1)}\n")
            continue
        match = _LINES.match(line)
        if match:
            prefix, count = ast.literal_eval(match.group(1))
            texts.extend(f"{prefix}-{i}\n" for i in range(int(count)))
    return texts, False


def make_certificates(directory: Path) -> Tuple[Path, Path, Path]:
    """Make a private CA and a server certificate for 127.0.0.1 and localhost.

    Returns
    -------
    tuple of Path
        The CA certificate (what a client passes as ``verify``), the server
        certificate and the server key, all PEM.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(tz=datetime.timezone.utc)
    start, end = now - datetime.timedelta(days=1), now + datetime.timedelta(days=2)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_file, cert_file, key_file = (directory / n for n in ("ca.pem", "server.pem", "key.pem"))
    ca_file.write_bytes(ca.public_bytes(pem))
    cert_file.write_bytes(cert.public_bytes(pem))
    key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca_file, cert_file, key_file


class _ClosedError(Exception):
    """The peer went away (or the server is stopping)."""


class _Reader:
    """Buffered reads from a socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> None:
        try:
            data = self.sock.recv(65536)
        except OSError as e:
            raise _ClosedError from e
        if not data:
            raise _ClosedError
        self.buffer += data

    def until(self, marker: bytes, limit: int = 65536) -> bytes:
        while marker not in self.buffer:
            if len(self.buffer) > limit:
                raise _ClosedError
            self._fill()
        head, self.buffer = self.buffer.split(marker, 1)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


@dataclass
class _Request:
    method: str
    path: str
    headers: Dict[str, str]
    body: bytes


@dataclass
class _Socket:
    """One accepted WebSocket: writes are locked, reads belong to its thread."""

    sock: socket.socket
    v1: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: threading.Event = field(default_factory=threading.Event)
    broken: bool = False  # a half-sent frame: no more frames may follow
    muted: bool = False  # read everything, answer nothing (but the close)

    def frame(self, opcode: int, payload: bytes) -> None:
        head = bytes([0x80 | opcode])
        size = len(payload)
        if size < 126:
            head += bytes([size])
        elif size < 1 << 16:
            head += bytes([126]) + struct.pack("!H", size)
        else:
            head += bytes([127]) + struct.pack("!Q", size)
        self.raw(head + payload)

    def raw(self, data: bytes) -> None:
        with self.lock:
            try:
                self.sock.sendall(data)
            except OSError as e:
                raise _ClosedError from e

    def message(self, msg: KernelMessage) -> None:
        if self.v1:
            self.frame(0x2, encode_v1(msg))
        else:
            self.frame(0x1, encode_legacy(msg).encode())


def _reply(
    request: KernelMessage, channel: str, msg_type: str, content: Dict[str, Any]
) -> KernelMessage:
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": msg_type,
        "session": "rogue-kernel",
        "username": "rogue",
        "version": "5.4",
        "date": datetime.datetime.now(tz=datetime.timezone.utc).isoformat(),
    }
    return KernelMessage(channel, header, dict(request.header), {}, content)


class RogueKernelServer:
    """The server. Set `faults` before the client connects.

    Parameters
    ----------
    token
        Token a request must carry as ``Authorization: Bearer``; `None`
        accepts anything.
    tls
        Serve HTTPS and WSS with a certificate from a private CA made for the
        occasion (`ca_file`).

    Attributes
    ----------
    url : str
        Base URL, ``http(s)://127.0.0.1:<port>/``.
    faults : Faults
        What to do wrong.
    sessions : dict
        Live sessions: id to ``{"id", "path", "kernel": {"id"}}``.
    deleted_sessions, deleted_kernels : list of str
        Ids deleted through the API, in order.
    seen : list of Seen
        Every HTTP request, the WebSocket upgrades included.
    sent_text : list of str
        Stream texts sent to clients, in order (for checking what reached
        the caller).
    interrupts : int
        ``interrupt_request`` messages and REST interrupts received.
    connections : int
        TCP connections accepted.
    """

    def __init__(self, token: Optional[str] = None, *, tls: bool = False) -> None:
        self.token = token
        self.faults = Faults()
        self.redirect_target = "http://127.0.0.1:9/elsewhere"
        self.oversize = 2 * 1024 * 1024
        self.huge_size = 64 * 1024 * 1024
        self.huge_sent = 0
        self.sessions: Dict[str, Dict[str, Any]] = {}
        # Kernels that "died while starting": left out of the kernel list.
        self.dead_kernels: Set[str] = set()
        self.deleted_sessions: List[str] = []
        self.deleted_kernels: List[str] = []
        self.seen: List[Seen] = []
        self.sent_text: List[str] = []
        self.interrupts = 0
        self.connections = 0
        self.created = threading.Event()
        self.handshaken = threading.Event()
        self.executing = threading.Event()
        self.close_received = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._tmp: Optional[tempfile.TemporaryDirectory[str]] = None
        self._context: Optional[ssl.SSLContext] = None
        self.ca_file: Optional[Path] = None
        if tls:
            self._tmp = tempfile.TemporaryDirectory(prefix="rogue-tls-")
            self.ca_file, cert, key = make_certificates(Path(self._tmp.name))
            self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._context.load_cert_chain(cert, key)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}/"
        self._start(self._accept_loop, "accept")

    # Bookkeeping

    def _start(self, target: Any, what: str, *args: Any) -> None:
        thread = threading.Thread(
            target=target, args=args, name=f"rogue-kernel-{what}", daemon=True
        )
        with self._lock:
            self._threads.append(thread)
        thread.start()

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.append(sock)

    def live_sessions(self) -> List[str]:
        """Ids of the sessions that exist (created and not deleted)."""
        with self._lock:
            return list(self.sessions)

    def close(self) -> None:
        """Stop: end every stall and trickle, close every socket, join the threads.

        Safe to call twice (a test may stop the server early to end a call
        that hangs).
        """
        if self._stop.is_set():
            return
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            if thread is not threading.current_thread():
                thread.join(timeout=5)
        if self._tmp is not None:
            self._tmp.cleanup()

    # Connections

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            self._track(sock)
            # Small frames go out at once, as from a server that is fast.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                number = self.connections
            silent = self.faults.silent_from
            if silent is not None and number >= silent:
                continue  # accepted, never read: held until close()
            self._start(self._serve, f"conn{number}", sock)

    def _serve(self, sock: socket.socket) -> None:
        try:
            if self._context is not None:
                sock.settimeout(5)
                sock = self._context.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
                self._track(sock)
            reader = _Reader(sock)
            while not self._stop.is_set():
                request = self._read_request(reader)
                if not self._handle(sock, reader, request):
                    return
        except (_ClosedError, OSError, ssl.SSLError, ValueError):
            return
        finally:
            with contextlib.suppress(OSError):
                sock.close()

    @staticmethod
    def _read_request(reader: _Reader) -> _Request:
        head = reader.until(b"\r\n\r\n").decode("latin-1")
        line, *rest = head.split("\r\n")
        method, path, _ = line.split(" ", 2)
        headers = {}
        for item in rest:
            name, _, value = item.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        body = reader.exactly(length) if length else b""
        return _Request(method, path, headers, body)

    # HTTP

    def _route(self, request: _Request) -> Tuple[str, List[str]]:
        path = request.path.split("?", 1)[0]
        patterns = [
            ("channels", r".*/api/kernels/([^/]+)/channels"),
            ("interrupt", r".*/api/kernels/([^/]+)/interrupt"),
            ("kernels", r".*/api/kernels"),
            ("delete_kernel", r".*/api/kernels/([^/]+)"),
            ("delete_session", r".*/api/sessions/([^/]+)"),
            ("sessions", r".*/api/sessions"),
            ("hub_home", r".*/hub/home"),
            ("lab", r".*/lab"),
        ]
        for name, pattern in patterns:
            match = re.fullmatch(pattern, path)
            if match:
                if name != "sessions":
                    return name, list(match.groups())
                return ("create" if request.method == "POST" else "list"), []
        return "unknown", []

    def _handle(self, sock: socket.socket, reader: _Reader, request: _Request) -> bool:
        """Answer one request; `False` when the connection is done."""
        with self._lock:
            self.seen.append(Seen(request.method, request.path, dict(request.headers)))
        route, args = self._route(request)
        if self.token is not None and request.headers.get("authorization") != (
            f"Bearer {self.token}"
        ):
            return self._answer(sock, 403, {"message": "bad token"})
        if route == "channels":
            self._websocket(sock, reader, request)
            return False
        fault = self.faults.http.get(route)
        if route == "create" and fault in ("hang", "close", "endless", "no_ids"):
            # The server made the session; only the answer goes wrong.
            session = self._create(request)
            if fault == "no_ids":
                return self._answer(sock, 201, {"id": session["id"], "kernel": {}})
        if fault is not None:
            return self._http_fault(sock, request, fault)
        if route == "create":
            return self._answer(sock, 201, self._create(request))
        if route == "list":
            with self._lock:
                return self._answer(sock, 200, list(self.sessions.values()))
        if route == "kernels":
            with self._lock:
                kernels = [m["kernel"] for m in self.sessions.values()]
                # A kernel that died while starting is removed from the list.
                kernels = [k for k in kernels if k["id"] not in self.dead_kernels]
            return self._answer(sock, 200, kernels)
        if route == "delete_session":
            with self._lock:
                found = self.sessions.pop(args[0], None)
                if found is not None:
                    self.deleted_sessions.append(args[0])
            return self._answer(sock, 204 if found else 404, None)
        if route == "delete_kernel":
            with self._lock:
                ours = [s for s, m in self.sessions.items() if m["kernel"]["id"] == args[0]]
                for session_id in ours:
                    del self.sessions[session_id]
                self.deleted_kernels.append(args[0])
            return self._answer(sock, 204, None)
        if route == "interrupt":
            with self._lock:
                self.interrupts += 1
            return self._answer(sock, 204, None)
        if route in ("hub_home", "lab"):
            cookie = "_xsrf=rogue-xsrf-" + route + "; Path=/"
            return self._answer(sock, 200, b"<html>ok</html>", {"Set-Cookie": cookie})
        return self._answer(sock, 404, {"message": "not here"})

    def _create(self, request: _Request) -> Dict[str, Any]:
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            body = {}
        session = {
            "id": uuid.uuid4().hex,
            "path": body.get("path", ""),
            "type": body.get("type", ""),
            "kernel": {"id": uuid.uuid4().hex, "execution_state": "starting"},
        }
        with self._lock:
            self.sessions[session["id"]] = session
        self.created.set()
        return session

    @staticmethod
    def _answer(
        sock: socket.socket,
        status: int,
        body: Any,
        headers: Optional[Dict[str, str]] = None,
    ) -> bool:
        if isinstance(body, bytes):
            data, kind = body, "text/html"
        elif body is None:
            data, kind = b"", "application/json"
        else:
            data, kind = json.dumps(body).encode(), "application/json"
        lines = [f"HTTP/1.1 {status} Rogue", f"Content-Length: {len(data)}"]
        if data:
            lines.append(f"Content-Type: {kind}")
        lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + data)
        return True

    def _http_fault(self, sock: socket.socket, request: _Request, fault: str) -> bool:
        if fault in ("hang", "hang_gone"):
            self._stop.wait()
            return False
        if fault == "close":
            return False
        if fault == "500":
            return self._answer(sock, 500, {"message": "rogue failure", "reason": None})
        if fault == "html_error":
            return self._answer(sock, 500, ERROR_PAGE)
        if fault == "html":
            return self._answer(sock, 200, b"<html><body>Not JSON</body></html>")
        if fault in ("endless", "endless_error"):
            status = 200 if fault == "endless" else 500
            sock.sendall(
                f"HTTP/1.1 {status} Rogue\r\nContent-Type: application/json\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            while not self._stop.wait(TRICKLE_INTERVAL):
                sock.sendall(b"1\r\n \r\n")
            return False
        if fault == "redirect_loop":
            return self._answer(sock, 302, None, {"Location": request.path})
        if fault == "redirect_out":
            return self._answer(sock, 302, None, {"Location": self.redirect_target})
        raise ValueError(f"unknown HTTP fault {fault!r}")

    # The WebSocket

    def _websocket(self, sock: socket.socket, reader: _Reader, request: _Request) -> None:
        fault = self.faults.handshake
        key = request.headers.get("sec-websocket-key", "")
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
        v1 = V1_SUBPROTOCOL in offered
        if fault in ("hang_gone", "hang_gone_once"):
            _, (kernel_id,) = self._route(request)
            with self._lock:
                self.dead_kernels.add(kernel_id)
                if fault == "hang_gone_once":
                    self.faults.handshake = None
        if fault in ("hang", "hang_gone", "hang_gone_once"):
            self._stop.wait()
            return
        if fault == "close":
            return
        if fault == "garbage":
            sock.sendall(b"\x00\xffNOT HTTP AT ALL \xfe\r\n\x07\r\n\r\n")
            return
        if fault == "403":
            self._answer(sock, 403, ERROR_PAGE)
            return
        if fault == "redirect":
            self._answer(sock, 302, None, {"Location": self.redirect_target})
            return
        accept = base64.b64encode(hashlib.sha1((key + _WS_GUID).encode()).digest()).decode()
        if fault == "bad_accept":
            accept = base64.b64encode(os.urandom(20)).decode()
        lines = [
            "HTTP/1.1 101 Switching Protocols",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Accept: {accept}",
        ]
        if fault in ("refuse_subprotocol", "wrong_subprotocol"):
            v1 = False
            if fault == "wrong_subprotocol" and offered != [""]:
                lines.append("Sec-WebSocket-Protocol: v2.bogus.example.org")
        elif v1:
            lines.append(f"Sec-WebSocket-Protocol: {V1_SUBPROTOCOL}")
        head = ("\r\n".join(lines) + "\r\n").encode()
        if fault == "trickle":
            sock.sendall(head + b"X-Padding: ")
            while not self._stop.wait(TRICKLE_INTERVAL):
                sock.sendall(b"a")
            return
        sock.sendall(head + b"\r\n")
        self.handshaken.set()
        ws = _Socket(sock, v1)
        try:
            self._kernel(ws, reader, stalled=fault == "stall")
        finally:
            ws.closed.set()

    def _read_frame(self, reader: _Reader) -> Tuple[int, bytes]:
        first, second = reader.exactly(2)
        opcode = first & 0x0F
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", reader.exactly(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", reader.exactly(8))
        mask = reader.exactly(4) if second & 0x80 else b""
        payload = reader.exactly(size)
        if mask:
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return opcode, payload

    def _kernel(self, ws: _Socket, reader: _Reader, *, stalled: bool) -> None:
        deaf = False
        while not self._stop.is_set():
            if deaf:
                # Never read again: the client's sends fill the buffers.
                self._stop.wait()
                return
            opcode, payload = self._read_frame(reader)
            if opcode == 0x8:
                self.close_received.set()
                if self.faults.close == "ignore" or ws.broken:
                    self._stop.wait()
                    return
                with contextlib.suppress(_ClosedError):
                    ws.frame(0x8, payload[:2])
                return
            if opcode == 0x9:
                ws.frame(0xA, payload)
                continue
            if opcode not in (0x1, 0x2) or stalled:
                continue
            if ws.muted:
                with contextlib.suppress(Exception):
                    if decode_v1(payload).msg_type == "interrupt_request":
                        with self._lock:
                            self.interrupts += 1
                continue
            msg = decode_v1(payload) if opcode == 0x2 and ws.v1 else decode_legacy(payload.decode())
            deaf = self._on_message(ws, msg)

    def _on_message(self, ws: _Socket, msg: KernelMessage) -> bool:
        """Act on one client message; `True` when the socket goes deaf."""
        if msg.msg_type == "kernel_info_request":
            ws.message(_reply(msg, "iopub", "status", {"execution_state": "busy"}))
            info = {"status": "ok", "protocol_version": "5.4", "implementation": "rogue"}
            ws.message(_reply(msg, msg.channel, "kernel_info_reply", info))
            ws.message(_reply(msg, "iopub", "status", {"execution_state": "idle"}))
            return msg.channel == "shell" and self.faults.ready == "deaf"
        if msg.msg_type == "interrupt_request":
            with self._lock:
                self.interrupts += 1
            ws.message(_reply(msg, "control", "interrupt_reply", {"status": "ok"}))
            return False
        if msg.msg_type != "execute_request":
            return False
        ws.message(_reply(msg, "iopub", "status", {"execution_state": "busy"}))
        fault = self.faults.execute
        if fault is not None:
            self._stream(ws, msg, "started\n")
            self.executing.set()
            return self._execute_fault(ws, msg, fault)
        self.executing.set()
        code = str(msg.content.get("code", ""))
        texts, failed = fake_output(code)
        for text in texts:
            self._stream(ws, msg, text)
        if failed:
            error = {"ename": "RuntimeError", "evalue": "rogue", "traceback": ["RuntimeError"]}
            ws.message(_reply(msg, "iopub", "error", error))
            reply = {"status": "error", "execution_count": 1, **error}
        else:
            reply = {"status": "ok", "execution_count": 1, "user_expressions": {}}
        ws.message(_reply(msg, "shell", "execute_reply", reply))
        ws.message(_reply(msg, "iopub", "status", {"execution_state": "idle"}))
        return False

    def _stream(self, ws: _Socket, msg: KernelMessage, text: str) -> None:
        ws.message(_reply(msg, "iopub", "stream", {"name": "stdout", "text": text}))
        with self._lock:
            self.sent_text.append(text)

    def _execute_fault(self, ws: _Socket, msg: KernelMessage, fault: str) -> bool:
        if fault == "stall":
            return False
        if fault == "mute":
            ws.muted = True
            return False
        if fault == "deaf":
            return True
        if fault == "stall_mid_frame":
            ws.broken = True
            frame = encode_v1(_reply(msg, "iopub", "stream", {"name": "stdout", "text": "x" * 100}))
            ws.raw(bytes([0x82, 126]) + struct.pack("!H", len(frame)) + frame[: len(frame) // 2])
            return False
        if fault == "trickle":
            self._start(self._trickle, "trickle", ws, msg)
            return False
        if fault == "truncated":
            frame = encode_v1(_reply(msg, "iopub", "stream", {"name": "stdout", "text": "x"}))
            ws.frame(0x2, frame[: len(frame) - 5])
        elif fault == "oversized":
            ws.message(
                _reply(msg, "iopub", "stream", {"name": "stdout", "text": "o" * self.oversize})
            )
        elif fault == "huge_frame":
            ws.broken = True
            self._start(self._huge, "huge", ws)
        elif fault == "huge_fragmented":
            ws.broken = True
            self._start(self._huge_fragmented, "huge", ws)
        elif fault == "garbage":
            ws.frame(0x2, os.urandom(300))
        elif fault == "bad_ws_frame":
            ws.broken = True
            ws.raw(bytes([0xF3, 4]) + b"junk")
        elif fault == "text_garbage":
            ws.frame(0x1, b"this is {not json")
        elif fault == "wrong_types":
            bad = _reply(msg, "iopub", "stream", {})
            content = json.dumps(["not", "an", "object"]).encode()
            # Rebuild the frame with a list where the content object goes.
            parts = [
                b"iopub",
                *(json.dumps(p).encode() for p in (bad.header, bad.parent_header, {})),
            ]
            parts.append(content)
            count = len(parts) + 1
            offsets = [8 * (count + 1)]
            for part in parts:
                offsets.append(offsets[-1] + len(part))
            frame = struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(parts)
            ws.frame(0x2, frame)
        elif fault == "close_frame":
            ws.frame(0x8, struct.pack("!H", 1011) + b"rogue going away")
        elif fault == "close_no_frame":
            ws.broken = True
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)
        elif fault == "reset":
            ws.broken = True
            with contextlib.suppress(OSError):
                ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                ws.sock.close()
        else:
            raise ValueError(f"unknown execute fault {fault!r}")
        return False

    def _trickle(self, ws: _Socket, msg: KernelMessage) -> None:
        tick = 0
        while not ws.closed.is_set() and not self._stop.wait(TRICKLE_INTERVAL):
            try:
                self._stream(ws, msg, f"tick {tick}\n")
            except _ClosedError:
                return
            tick += 1

    def _huge(self, ws: _Socket) -> None:
        chunk = b"\0" * 65536
        try:
            ws.raw(bytes([0x82, 127]) + struct.pack("!Q", self.huge_size))
            while self.huge_sent < self.huge_size and not self._stop.is_set():
                ws.raw(chunk)
                self.huge_sent += len(chunk)
        except _ClosedError:
            return

    def _huge_fragmented(self, ws: _Socket) -> None:
        fragment = 512 * 1024
        payload = b"\0" * fragment
        try:
            while self.huge_sent < self.huge_size and not self._stop.is_set():
                first = self.huge_sent == 0
                last = self.huge_sent + fragment >= self.huge_size
                opcode = 0x2 if first else 0x0
                head = bytes([(0x80 if last else 0) | opcode, 127]) + struct.pack("!Q", fragment)
                ws.raw(head + payload)
                self.huge_sent += fragment
        except _ClosedError:
            return


ERROR_PAGE = (
    b"<html><head><script>var page = {xsrf_token: 'ROGUE-XSRF-SECRET'};</script></head>"
    b'<body><form><input type="hidden" name="_xsrf" value="ROGUE-XSRF-SECRET"></form>'
    b'<a href="/hub/api/oauth2/authorize?client_id=x&state=ROGUE-OAUTH-STATE&code=ROGUE-CODE">'
    b"retry</a> Internal rogue error</body></html>"
)
"""An error page with every secret a hub page may hold (for redaction tests)."""

PAGE_SECRETS = ("ROGUE-XSRF-SECRET", "ROGUE-OAUTH-STATE", "ROGUE-CODE")
"""The secrets in that page, which no exception or log may show."""


@contextlib.contextmanager
def running_rogue_kernel(
    token: Optional[str] = None, *, tls: bool = False
) -> Iterator[RogueKernelServer]:
    """Run a `RogueKernelServer` for the duration of a ``with`` block."""
    server = RogueKernelServer(token, tls=tls)
    try:
        yield server
    finally:
        server.close()


@contextlib.contextmanager
def unresponsive_port() -> Iterator[int]:
    """A port whose connects hang: a listener whose accept queue is full.

    Linux drops SYNs to a listener with a full accept queue (with
    ``tcp_abort_on_overflow`` off, the default), so ``connect`` waits until
    the client's own timeout: the "connect never completes" fault, on
    loopback.
    """
    listener = socket.socket()
    held: List[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        # Fill the queue: the first connect completes (queued, never
        # accepted); a second one confirms that the queue is full.
        for _ in range(2):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            held.append(filler)
        yield port
    finally:
        for sock in held:
            sock.close()
        listener.close()


def closed_port() -> int:
    """A port where nothing listens (connects are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
