"""ASGI middleware for library mode's inbound side: ``app = MeshMiddleware(app)``.

Each HTTP request passes the app port's inbound policy from the control plane (authorization,
then the rate limit; a refusal is answered here with the reason in ``x-tulle-error``, as a
sidecar answers) and is recorded in the mesh metrics (``reporter="destination"``) and the access
log. On lifespan startup the app's endpoint is registered with the control plane, and on
shutdown deregistered (servers without lifespan: call ``start()``/``stop()``).

Served by :mod:`tulle.client.uvicorn`, the app's port terminates mTLS: the caller's SPIFFE id
(scope ``state``) is the request's principal for AuthorizationPolicy, and the app gets
``X-Forwarded-Client-Cert`` as a sidecar sets it (a caller's own is always dropped)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread

from tulle.client.inbound import InboundGate, ServedRequest
from tulle.client.inbound_tls import CONNECTION, PEER_PRINCIPAL, client_cert_header
from tulle.client.runtime import MeshRuntime
from tulle.client.trace_headers import traced_scope
from tulle.engine.message import Response
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class MeshMiddleware:
    """Wraps an ASGI app with the mesh's inbound features."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        port: int | None = None,
        service: str | None = None,
        service_port: int | None = None,
        labels: dict[str, str] | None = None,
        runtime: MeshRuntime | None = None,
    ) -> None:
        self.app = app
        self.gate = InboundGate(runtime, port, service, service_port, labels)

    def start(self) -> None:
        """Register the app's endpoint (lifespan startup does this)."""
        self.gate.start()

    def stop(self) -> None:
        """Deregister the app's endpoint (lifespan shutdown does this)."""
        self.gate.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                await anyio.to_thread.run_sync(self.gate.stop)
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                await anyio.to_thread.run_sync(self.gate.start)
            await send(message)

        await self.app(scope, receiving, sending)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = _served(scope)
        state = scope.get("state") or {}
        terminated = PEER_PRINCIPAL in state  # the connection came through tulle.client.uvicorn
        principal = state.get(PEER_PRINCIPAL)
        request.peer_principal = principal
        server = scope.get("server") or ("", 0)
        facts = state.get(CONNECTION)
        if facts is not None:  # the socket's own peer, not uvicorn's proxy_headers client
            request.local_ip, request.sni, request.source_ip = facts
        else:
            request.local_ip = str(server[0] or "")
        service, refused = self.gate.admit(request, server[1] or 0, terminated)
        if refused is not None:
            sent = await _answer(send, refused)
            self.gate.record(request, service, refused, sent)
            return
        scope = traced_scope(self._forward_client_cert(scope, principal), request.span)
        status, sent = 500, 0

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                request.received += len(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            self.gate.record(request, service, Response(status, []), sent)

    def _forward_client_cert(self, scope: Scope, principal: str | None) -> Scope:
        """The scope the app sees: a caller's own X-Forwarded-Client-Cert dropped, the one of
        the handshake added; over mTLS a caller's x-tulle-source-workload claim dropped too (its
        certificate says who it is, as the sidecar does). A copy of the scope only when
        something changes."""
        value = client_cert_header(principal, self.gate.runtime.inbound_tls.own_identity)
        headers = scope["headers"]
        dropped = (XFCC, SOURCE_WORKLOAD) if principal is not None else (XFCC,)
        if value is None and not any(name in dropped for name, _ in headers):  # lower case
            return scope
        kept = [(name, v) for name, v in headers if name not in dropped]
        if value is not None:
            kept.append((XFCC, value.encode("latin-1")))
        return {**scope, "headers": kept}


XFCC = b"x-forwarded-client-cert"
SOURCE_WORKLOAD = SOURCE_WORKLOAD_HEADER.encode()


def _served(scope: Scope) -> ServedRequest:
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
    path = scope.get("raw_path") or scope["path"].encode()
    if isinstance(path, bytes):
        path = path.decode("latin-1")
    if scope.get("query_string"):
        path = f"{path}?{scope['query_string'].decode('latin-1')}"
    client = scope.get("client") or ("", 0)
    authority = next((v for k, v in headers if k == "host"), "")
    return ServedRequest(scope["method"], path, authority, headers, source_ip=client[0])


async def _answer(send: Send, response: Response) -> int:
    """Send the mesh's own ``response``; the body bytes sent."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    body = response.body if isinstance(response.body, bytes) else b""
    await send({"type": "http.response.body", "body": body})
    return len(body)
