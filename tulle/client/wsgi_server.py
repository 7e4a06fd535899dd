"""A WSGI server for library mode that terminates mTLS: the standard library's threading
``wsgiref`` server, whose connections are judged by the app port's PeerAuthentication mode before
the app sees a byte (STRICT: mTLS only; PERMISSIVE: mTLS or plain text, told apart by the first
byte, which is peeked, not read; DISABLE: plain text).

    from tulle.client.wsgi import MeshMiddleware, make_server
    make_server("0.0.0.0", 8080, MeshMiddleware(app)).serve_forever()

Each connection is handled in a thread of its own, and the peek and the handshake happen there
(never in the accepting thread, which a slow client would otherwise hold up). The handshake uses
the context of the workload's current certificate, so a renewed certificate serves the next
connection with no restart. The caller's SPIFFE id goes into the environ (``tulle.peer_principal``;
``HTTPS=on``) for :class:`~tulle.client.wsgi.MeshMiddleware`. Refusals close the connection, are
counted in ``tulle_inbound_tls_refused_total{reason}`` and logged with the peer and the reason."""

from __future__ import annotations

import socket
import ssl
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from tulle.client.inbound import InboundGate
from tulle.client.inbound_tls import (
    CONNECTION,
    FIRST_BYTES_TIMEOUT,
    HANDSHAKE_TIMEOUT,
    NO_IDENTITY,
    PEER_PRINCIPAL,
)
from tulle.client.runtime import MeshRuntime, get_runtime
from tulle.client.settings import port_variable
from tulle.security.verify import PeerRefused
from tulle.transport.tls_errors import describe
from tulle.transport.tls_open import PLAIN_REFUSED, TLS_HANDSHAKE_RECORD
from tulle.transport.tls_transport import SNI_ATTRIBUTE


class MeshRequestHandler(WSGIRequestHandler):
    """wsgiref's handler, with the caller's identity in the environ."""

    server: MeshWSGIServer

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ[PEER_PRINCIPAL] = self.server.peer_principal()
        own = self.connection.getsockname()
        sni = getattr(self.connection, SNI_ATTRIBUTE, None) or ""  # keep_sni's, over TLS
        local = str(own[0]) if isinstance(own, tuple) else ""
        environ[CONNECTION] = (local, sni, str(self.client_address[0]))
        if isinstance(self.connection, ssl.SSLSocket):
            environ["HTTPS"] = "on"  # wsgi.url_scheme https
        return environ


class MeshWSGIServer(ThreadingMixIn, WSGIServer):
    """A threading WSGI server whose port terminates mTLS as the mesh says. ``app_port`` is the
    app's port in the mesh (its Workload's), for the port's mode: by default the port of the
    :class:`~tulle.client.wsgi.MeshMiddleware` it serves, else ``PORT``, else the port it
    listens on (a workload with one port has that port's mode whatever port it listens on)."""

    daemon_threads = True
    # wsgiref answers one request per connection: under load a backlog of socketserver's
    # default 5 overflows, and the kernel drops connections that its client retries 1 s later.
    request_queue_size = 128

    def __init__(
        self,
        address: tuple[str, int],
        handler_class: type[MeshRequestHandler] = MeshRequestHandler,
        *,
        runtime: MeshRuntime | None = None,
        app_port: int | None = None,
    ) -> None:
        super().__init__(address, handler_class)
        self.runtime = runtime or get_runtime()
        self.app_port = app_port
        self._peer = threading.local()
        # The app's endpoint is in the mesh from now on (when the app has an identity).
        self.runtime.declare_mtls_server()

    def set_app(self, application: Any) -> None:
        super().set_app(application)
        gate = getattr(application, "gate", None)
        if self.app_port is None and isinstance(gate, InboundGate):
            self.app_port = gate.port

    def mesh_port(self) -> int:
        """The app port whose mode this server's connections are judged by."""
        return self.app_port or port_variable("PORT", lowest=1) or self.server_address[1]

    def peer_principal(self) -> str | None:
        """The SPIFFE id of the connection the calling thread handles (None: plain text)."""
        principal: str | None = getattr(self._peer, "principal", None)
        return principal

    def finish_request(self, request: Any, client_address: Any) -> None:
        """In the connection's thread: judge the connection, then run the handler on it."""
        connection = self._admit(request, client_address)
        if connection is None:
            return
        try:
            self.RequestHandlerClass(connection, client_address, self)  # type: ignore[arg-type]
        finally:
            self._peer.principal = None
            if connection is not request:
                _close_tls(connection)

    def _admit(self, sock: socket.socket, peer: Any) -> socket.socket | None:
        """The connection to serve (the TLS one, or ``sock`` for plain text), or None when it
        is refused or went away before its first byte."""
        tls = self.runtime.inbound_tls
        self._peer.principal = None
        mode = tls.mode(self.mesh_port())
        if mode == "STRICT" and not tls.has_identity:
            tls.refused(peer, NO_IDENTITY)
            return None
        if mode == "DISABLE":
            return sock
        sock.settimeout(FIRST_BYTES_TIMEOUT)
        try:
            first = sock.recv(1, socket.MSG_PEEK)
        except OSError:
            return None  # no byte in time, or reset: nothing was refused
        if not first:
            return None  # connected and closed (a TCP health check)
        if first[0] != TLS_HANDSHAKE_RECORD:
            if mode == "STRICT":
                tls.refused(peer, PLAIN_REFUSED)
                return None
            sock.settimeout(None)
            return sock
        try:
            context = tls.context()
        except ValueError as error:
            tls.refused(peer, f"no TLS context: {error}")
            return None
        secure = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        try:
            secure.settimeout(HANDSHAKE_TIMEOUT)
            secure.do_handshake()
            self._peer.principal = tls.principal(secure.getpeercert())
        except (OSError, PeerRefused) as error:
            reason = (
                f"handshake timed out after {HANDSHAKE_TIMEOUT:g}s"
                if isinstance(error, TimeoutError)
                else describe(error)
            )
            tls.refused(peer, reason)
            secure.close()
            return None
        secure.settimeout(None)
        return secure


def _close_tls(connection: socket.socket) -> None:
    """Send close_notify without waiting for the peer's, then close."""
    try:
        connection.setblocking(False)
        if isinstance(connection, ssl.SSLSocket):
            connection.unwrap()
    except (OSError, ValueError):
        pass  # SSLWantReadError once close_notify is out; the peer may be gone
    connection.close()


def make_server(
    host: str,
    port: int,
    app: Any,
    server_class: type[MeshWSGIServer] = MeshWSGIServer,
    handler_class: type[MeshRequestHandler] = MeshRequestHandler,
    *,
    runtime: MeshRuntime | None = None,
    app_port: int | None = None,
) -> MeshWSGIServer:
    """``wsgiref.simple_server.make_server`` with mTLS: a :class:`MeshWSGIServer` on
    ``host:port`` serving ``app`` (a :class:`~tulle.client.wsgi.MeshMiddleware`)."""
    server = server_class((host, port), handler_class, runtime=runtime, app_port=app_port)
    server.set_app(app)
    return server
