"""A kernel WebSocket connection that turns Nagle's algorithm off (benchmark only).

jupyter_server's kernel WebSocket leaves ``TCP_NODELAY`` off, so each small
message it sends waits for the client's (delayed) ACK of the previous one.
The benchmark's second lab selects this class with
``--ServerApp.kernel_websocket_connection_class=_bench_nodelay.NoDelayConnection``
(this directory on ``PYTHONPATH``) to measure the clients without that stall.

``connect`` runs from the handler's ``open``, after tornado has detached the
stream from the HTTP connection, which sets ``TCP_NODELAY`` back to off when
it finishes the upgrade response; so the flag set here stays on.
"""

import socket

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """`ZMQChannelsWebsocketConnection` with ``TCP_NODELAY`` on its socket."""

    async def connect(self):
        handler = self.websocket_handler
        handler.set_nodelay(True)
        sock = handler.ws_connection.stream.socket
        on = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        self.log.info("BENCH-NODELAY kernel WebSocket TCP_NODELAY=%s", on)
        return await super().connect()
