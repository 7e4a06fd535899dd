"""The cart service, in library mode: the one shop app that imports Tulle. It calls catalog
through ``tulle.client`` (routing, the canary split, retries and metrics in-process, no sidecar)
and serves behind ``tulle.client.wsgi.MeshMiddleware`` (its RateLimit, the callee's metrics) on
Tulle's WSGI server (``tulle.client.wsgi.make_server``: the standard library's, terminating mTLS
with the workload's certificate) on $PORT. It passes the trace headers of the request it serves
on to catalog, as every app in a mesh must (docs/observability.md)."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

import tulle.client
from tulle.client.wsgi import MeshMiddleware, make_server
from tulle.client.wsgi_server import MeshRequestHandler

catalog = tulle.client.Client(timeout=5)
TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                 "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id")  # fmt: skip


def trace_headers(environ: dict[str, Any]) -> dict[str, str]:
    """The trace headers of the request being served (WSGI's ``HTTP_X_B3_TRACEID`` and so on)."""
    found = {name: environ.get("HTTP_" + name.upper().replace("-", "_")) for name in TRACE_HEADERS}
    return {name: value for name, value in found.items() if value}


def cart(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    status, answer = "200 OK", {"ok": True}
    if path.startswith("/cart"):
        try:
            items = catalog.get("http://catalog:8080/items", headers=trace_headers(environ)).json()
            picked = items["items"][:2]
            answer = {"items": picked, "total": sum(i["price"] for i in picked),
                      "catalog": items["version"]}  # fmt: skip
        except tulle.client.MeshError as error:
            status, answer = f"{error.status} Mesh Error", {"error": error.reason}
    elif path != "/healthz":
        status, answer = "404 Not Found", {"error": f"no {path}"}
    body = json.dumps(answer).encode()
    start_response(status, [("content-type", "application/json"),
                            ("content-length", str(len(body)))])  # fmt: skip
    return [body]


class Quiet(MeshRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> None:
    app = MeshMiddleware(cart)
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ.get("PORT", "8080"))
    server = make_server(host, port, app, handler_class=Quiet)
    print(f"cart listening on {server.server_address[1]} (library mode)", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stopped.wait()
    server.shutdown()
    app.close()
    catalog.close()
    tulle.client.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
