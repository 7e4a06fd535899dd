"""WSGI middleware for library mode's inbound side: ``app = MeshMiddleware(app)``.

Each request passes the app port's inbound policy from the control plane (authorization, then the
rate limit; a refusal is answered here with the reason in ``x-tulle-error``, as a sidecar answers)
and is recorded in the mesh metrics (``reporter="destination"``) and the access log. WSGI has no
startup or shutdown event: the app's endpoint is registered when the middleware is made and
deregistered by ``close()`` or at interpreter exit.

Served by :func:`make_server` (:mod:`tulle.client.wsgi_server`), the app's port terminates mTLS:
the caller's SPIFFE id (environ ``tulle.peer_principal``) is the request's principal for
AuthorizationPolicy, and the app gets ``X-Forwarded-Client-Cert`` as a sidecar sets it (a
caller's own is always dropped)."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import IO, Any

from tulle.client.inbound import InboundGate, ServedRequest
from tulle.client.inbound_tls import CONNECTION, PEER_PRINCIPAL, client_cert_header
from tulle.client.runtime import MeshRuntime
from tulle.client.trace_headers import traced_environ
from tulle.client.wsgi_server import MeshWSGIServer, make_server
from tulle.engine.message import Response
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER

Environ = dict[str, Any]
StartResponse = Callable[..., Callable[[bytes], object]]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
XFCC = "HTTP_X_FORWARDED_CLIENT_CERT"
SOURCE_WORKLOAD = "HTTP_" + SOURCE_WORKLOAD_HEADER.upper().replace("-", "_")

__all__ = ["MeshMiddleware", "MeshWSGIServer", "make_server"]


class MeshMiddleware:
    """Wraps a WSGI app with the mesh's inbound features."""

    def __init__(
        self,
        app: WSGIApp,
        *,
        port: int | None = None,
        service: str | None = None,
        service_port: int | None = None,
        labels: dict[str, str] | None = None,
        runtime: MeshRuntime | None = None,
        register: bool = True,
    ) -> None:
        self.app = app
        self.gate = InboundGate(runtime, port, service, service_port, labels)
        if register:
            self.gate.start()
            atexit.register(self.gate.stop)

    def close(self) -> None:
        """Deregister the app's endpoint."""
        self.gate.stop()
        atexit.unregister(self.gate.stop)

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = _served(environ)
        terminated = PEER_PRINCIPAL in environ
        principal = environ.get(PEER_PRINCIPAL) if terminated else None
        request.peer_principal = principal
        facts = environ.get(CONNECTION)
        if facts is not None:
            request.local_ip, request.sni, request.source_ip = facts
        port = int(environ.get("SERVER_PORT") or 0)
        service, refused = self.gate.admit(request, port, terminated)
        if refused is not None:
            body = refused.body if isinstance(refused.body, bytes) else b""
            start_response(f"{refused.status} {_phrase(refused.status)}", refused.headers)
            self.gate.record(request, service, refused, len(body))
            return [body]
        status = [500]

        def starting(status_line: str, headers: list[tuple[str, str]], *rest: Any) -> Any:
            status[0] = int(status_line.split(" ", 1)[0])
            return start_response(status_line, headers, *rest)

        environ.pop(XFCC, None)
        if principal is not None:  # its certificate says who it is, as the sidecar does
            environ.pop(SOURCE_WORKLOAD, None)
        forwarded = client_cert_header(principal, self.gate.runtime.inbound_tls.own_identity)
        if forwarded is not None:
            environ[XFCC] = forwarded
        environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], request)
        traced_environ(environ, request.span)
        try:
            chunks = self.app(environ, starting)
        except BaseException:
            self.gate.record(request, service, Response(500, []), 0)
            raise
        return _Recorded(chunks, lambda sent: self.gate.record(
            request, service, Response(status[0], []), sent))  # fmt: skip


class _Recorded:
    """The app's response body, recorded once the server has sent (and closed) it."""

    def __init__(self, chunks: Iterable[bytes], done: Callable[[int], None]) -> None:
        self.chunks, self.done, self.sent = chunks, done, 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.chunks:
            self.sent += len(chunk)
            yield chunk

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        try:
            if close is not None:
                close()
        finally:
            self.done(self.sent)


class _CountingInput:
    """``wsgi.input`` that counts the body bytes the app reads."""

    def __init__(self, stream: IO[bytes], request: ServedRequest) -> None:
        self.stream, self.request = stream, request

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.request.received += len(data)
        return data

    def readline(self, size: int = -1) -> bytes:
        data = self.stream.readline(size)
        self.request.received += len(data)
        return data

    def readlines(self, hint: int = -1) -> list[bytes]:
        lines = self.stream.readlines(hint)
        self.request.received += sum(map(len, lines))
        return lines

    def __iter__(self) -> Iterator[bytes]:
        for line in self.stream:
            self.request.received += len(line)
            yield line


def _served(environ: Environ) -> ServedRequest:
    headers = [
        (key[5:].replace("_", "-").lower(), value)
        for key, value in environ.items()
        if key.startswith("HTTP_")
    ]
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers.append((key.replace("_", "-").lower(), environ[key]))
    path = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
    if "RAW_URI" not in environ and environ.get("QUERY_STRING"):
        path = f"{path}?{environ['QUERY_STRING']}"
    authority = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return ServedRequest(environ.get("REQUEST_METHOD", "GET"), path, authority, headers,
                         source_ip=environ.get("REMOTE_ADDR", ""))  # fmt: skip


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
