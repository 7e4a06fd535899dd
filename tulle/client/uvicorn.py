"""uvicorn with mTLS for library mode: the app's port terminates mutual TLS as the mesh says
(PeerAuthentication STRICT, PERMISSIVE or DISABLE), in the app's own process and event loop,
with no extra hop and without uvicorn's ``--ssl-*`` options.

    python -m tulle.client.uvicorn app:app --port 8080     # instead of: uvicorn app:app ...
    tulle.client.uvicorn.run(app, port=8080)               # instead of: uvicorn.run(app, ...)
    uvicorn.run(app, http=tulle.client.uvicorn.MeshHttp)   # the protocol itself

:class:`MeshHttp` is uvicorn's ``--http`` protocol class: each connection starts in Tulle's
:class:`~tulle.transport.tls_open.TlsOrPlain`, which peeks at the first byte (a TLS handshake
record is 0x16), does TLS over memory BIOs with the context of the workload's current
certificate (a renewed certificate serves the next connection; no restart), checks the caller's
identity, and only then hands the plaintext to uvicorn's own HTTP/1.1 protocol (httptools, else
h11). That protocol is made per connection with the caller's SPIFFE id in its state, which
uvicorn copies into every request's scope (``scope["state"]["tulle.peer_principal"]``) for
:class:`~tulle.client.asgi.MeshMiddleware`. A refused connection is closed, counted and logged
before uvicorn sees it."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import uvicorn
from uvicorn.main import main as uvicorn_main  # uvicorn's click command
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from tulle.client.inbound_tls import CONNECTION, NO_IDENTITY, PEER_PRINCIPAL, InboundTls
from tulle.client.runtime import declare_mtls_server, get_runtime
from tulle.client.settings import port_variable
from tulle.security.verify import PeerCertDict
from tulle.transport.mtls import connection_facts
from tulle.transport.tls_open import TlsOrPlain

PROTOCOL = "tulle.client.uvicorn:MeshHttp"
"""What ``--http`` takes to use :class:`MeshHttp`."""


class MeshHttp(asyncio.Protocol):
    """uvicorn's HTTP protocol behind the port's mTLS mode (made by uvicorn per connection)."""

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: Any,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        self.config = config
        self.server_state = server_state
        self.app_state = app_state
        self.loop = _loop
        self.principal: str | None = None
        runtime = get_runtime()
        if not runtime.terminates_mtls:  # served with --http alone: from the first connection
            runtime.declare_mtls_server()
        self.tls: InboundTls = runtime.inbound_tls

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        tls = self.tls
        mode = tls.mode(_app_port(transport))
        if mode == "STRICT" and not tls.has_identity:
            tls.refused(transport.get_extra_info("peername"), NO_IDENTITY)
            transport.close()
            return
        gate = TlsOrPlain(mode, tls.context, self._inner, tls.refused, verify_peer=self._verify)
        transport.set_protocol(gate)
        gate.connection_made(transport)

    def _verify(self, cert: PeerCertDict | None, der: bytes | None) -> None:
        """After the handshake: the caller's identity (PeerRefused closes the connection)."""
        self.principal = self.tls.principal(cert)

    def _inner(self) -> asyncio.Protocol:
        """uvicorn's protocol for this connection, its state carrying the caller's id."""
        state = {**self.app_state, PEER_PRINCIPAL: self.principal}
        protocol: asyncio.Protocol = AutoHTTPProtocol(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=state, _loop=self.loop
        )
        made = protocol.connection_made

        def connection_made(transport: asyncio.BaseTransport) -> None:
            # uvicorn copies this state into each request's scope: the connection's facts
            # are in it before the first request (the state is the protocol's own dict).
            peer = transport.get_extra_info("peername")
            peer_ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
            state[CONNECTION] = (*connection_facts(transport, None), peer_ip)
            made(transport)

        setattr(protocol, "connection_made", connection_made)  # noqa: B010
        return protocol


def _app_port(transport: asyncio.BaseTransport) -> int:
    """The app's port in the mesh: ``PORT``, else the port the connection came to."""
    port = port_variable("PORT", lowest=1)
    if port is not None:
        return port
    sockname = transport.get_extra_info("sockname")
    return int(sockname[1]) if isinstance(sockname, tuple) and len(sockname) >= 2 else 0


def run(app: Any, **kwargs: Any) -> None:
    """``uvicorn.run`` with :class:`MeshHttp` (TLS options are refused: the mesh's
    certificate is the one the port presents)."""
    for option in ("ssl_certfile", "ssl_keyfile", "ssl_context_factory"):
        if kwargs.get(option) is not None:
            raise ValueError(f"{option}: the port terminates mTLS with the mesh's certificate")
    declare_mtls_server()
    uvicorn.run(app, http=MeshHttp, **kwargs)


def main(argv: list[str] | None = None) -> None:
    """``python -m tulle.client.uvicorn`` takes uvicorn's command line and adds
    ``--http tulle.client.uvicorn:MeshHttp``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(arg.startswith("--ssl") for arg in args):
        sys.exit("tulle.client.uvicorn: no --ssl-* options: the port terminates mTLS itself")
    declare_mtls_server()  # before uvicorn imports the app, which may configure() a runtime
    uvicorn_main.main(args=[*args, "--http", PROTOCOL], prog_name="python -m tulle.client.uvicorn")


if __name__ == "__main__":
    main()
