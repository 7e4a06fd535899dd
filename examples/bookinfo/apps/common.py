"""What Bookinfo's stand-ins share: a threaded standard-library HTTP server on ``$PORT`` with
``/health``, the headers Istio asks every app to pass on from its inbound request to its
outbound calls (tracing, request id, the end user), and one outbound GET. No Tulle import: in
sidecar mode the calls go through ``HTTP_PROXY``, as any HTTP client's do."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# The headers upstream Bookinfo propagates (productpage.py's getForwardHeaders, reviews'
# headers_to_propagate): trace context of every format Istio knows, the request id, the user.
PROPAGATED = (
    "x-request-id", "x-ot-span-context", "x-datadog-trace-id", "x-datadog-parent-id",
    "x-datadog-sampling-priority", "traceparent", "tracestate", "x-cloud-trace-context",
    "grpc-trace-bin", "x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled",
    "x-b3-flags", "b3", "sw8", "end-user", "user-agent", "cookie", "authorization", "jwt",
)  # fmt: skip

# A handler takes (method, path, headers) and returns (status, content type, body).
Handler = Callable[[str, str, dict[str, str]], tuple[int, str, bytes]]


def as_json(status: int, answer: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(answer).encode()


def passed_on(headers: dict[str, str]) -> dict[str, str]:
    """The inbound request's headers an outbound call carries."""
    return {name: headers[name] for name in PROPAGATED if name in headers}


def get_json(url: str, headers: dict[str, str], timeout: float) -> tuple[int, Any]:
    """``GET url`` (through the sidecar, when there is one): its status and JSON, or status 0
    when it failed or timed out (``timeout`` applies to the connect and to each read, as the
    ``requests`` and JAX-RS clients of upstream Bookinfo do)."""
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status, json.loads(reply.read() or b"null")
    except urllib.error.HTTPError as error:
        error.read()
        return error.code, None
    except (OSError, ValueError):
        return 0, None


class Server(ThreadingHTTPServer):
    """A thread per connection, with room for bursts of connections."""

    daemon_threads = True
    request_queue_size = 128


def serve(name: str, handle: Handler) -> None:
    """Serve ``handle`` on $HOST:$PORT until SIGTERM."""

    class Answer(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _any(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            if length:
                self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path == "/health":
                status, kind, body = as_json(200, {"status": f"{name} is healthy"})
            else:
                status, kind, body = handle(self.command, self.path, headers)
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _any  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            return

    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "9080")))
    server = Server(address, Answer)
    print(f"{name} listening on {server.server_address[1]}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    sys.exit(0)
