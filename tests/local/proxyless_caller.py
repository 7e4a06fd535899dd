"""A proxyless gRPC client app for tests/local/test_proxyless.py, run by ``tulle up`` as a
``mesh: proxyless`` Workload: stock grpcio, its xDS config and certificates from what the runner
gave it (``GRPC_XDS_BOOTSTRAP``, the agent's files). ``GET /call?target=xds:///...`` makes one
``/greeter.Greeter/SayHello`` call on a new channel (a new handshake, with the certificate files
as grpcio last read them) with ``grpc.xds_channel_credentials`` and answers one JSON object:
``{"ok": true, "reply": ...}`` or ``{"ok": false, "code": ..., "detail": ...}``. ``GET /ready``
answers 200. Serves plain HTTP/1.1 on ``HOST``:``PORT``; stops on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import grpc.experimental

CREDENTIALS = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())


def call(target: str) -> dict[str, object]:
    with grpc.secure_channel(target, CREDENTIALS) as channel:
        try:
            reply = channel.unary_unary("/greeter.Greeter/SayHello")(b"hi", timeout=10)
        except grpc.RpcError as error:
            return {"ok": False, "code": error.code().name, "detail": error.details()}
    return {"ok": True, "reply": reply.decode()}


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/ready":
            body = b"ready"
        elif url.path == "/call":
            target = urllib.parse.parse_qs(url.query)["target"][0]
            body = json.dumps(call(target)).encode()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    server = ThreadingHTTPServer((os.environ["HOST"], int(os.environ["PORT"])), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
