"""The ``ledger`` test app: a WSGI app behind ``tulle.client.wsgi.MeshMiddleware``, served by
``tulle.client.wsgi_server`` (a port that terminates mTLS). It answers what the mesh told it
about the caller. Settings come from the ``TULLE_*`` variables and ``PORT``; prints
``READY <port>`` once it listens, stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from tulle.client.inbound_tls import PEER_PRINCIPAL
from tulle.client.settings import port_variable
from tulle.client.wsgi import MeshMiddleware, make_server
from tulle.client.wsgi_server import MeshRequestHandler


def ledger(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    body = json.dumps({
        "principal": environ.get(PEER_PRINCIPAL),
        "client_cert": environ.get("HTTP_X_FORWARDED_CLIENT_CERT"),
        "scheme": environ["wsgi.url_scheme"],
        "source_claim": environ.get("HTTP_X_TULLE_SOURCE_WORKLOAD"),
    }).encode()  # fmt: skip
    start_response("200 OK", [("content-type", "application/json"),
                              ("content-length", str(len(body)))])  # fmt: skip
    return [body]


class Quiet(MeshRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    app = MeshMiddleware(ledger)  # registers the endpoint (TULLE_SERVICE, PORT)
    server = make_server("127.0.0.1", port_variable("PORT") or 0, app, handler_class=Quiet)
    print(f"READY {server.server_address[1]}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    app.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
