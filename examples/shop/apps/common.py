"""What the shop's HTTP apps share: a threaded standard-library server answering JSON on
``$PORT``, with ``/healthz``. No Tulle import: the mesh reaches these apps from outside."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A handler takes (method, path, headers, body) and returns (status, JSON-able answer).
Handler = Callable[[str, str, dict[str, str], bytes], tuple[int, Any]]


class Server(ThreadingHTTPServer):
    """A thread per connection, with a listen backlog for bursts of connections (socketserver's
    default of 5 overflows under load: the kernel drops the connection, the client retries it
    a second later)."""

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
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            if self.path == "/healthz":
                status, answer = 200, {"ok": True}
            else:
                status, answer = handle(self.command, self.path, headers, body)
            payload = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = _any  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            return

    address = (os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080")))
    server = Server(address, Answer)
    print(f"{name} listening on {server.server_address[1]}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    sys.exit(0)
