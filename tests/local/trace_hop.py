"""A test app that passes trace headers on, as the docs ask of every app (plain WSGI, standard
library): ``GET /hop?to=HOST:PORT&to=...`` calls ``http://<first to>/hop?to=<the rest>`` with
the trace headers of the request it serves, and answers JSON: its name, the trace headers it
got, and the next hop's answer. ``fail=1`` is passed on, and the last hop answers it 503.

Sidecar mode: served by wsgiref, calls through the sidecar's HTTP proxy (``HTTP_PROXY``, which
``tulle up`` sets). Library mode (``TULLE_XDS_ADDRESS`` set): served behind
``tulle.client.wsgi.MeshMiddleware`` on Tulle's WSGI server, calls through ``tulle.client``."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                 "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id")  # fmt: skip
NAME = os.environ.get("TULLE_WORKLOAD", "app")
LIBRARY = bool(os.environ.get("TULLE_XDS_ADDRESS"))


def _call(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    if LIBRARY:
        import tulle.client

        try:
            response = tulle.client.Client(timeout=30).get(url, headers=headers)
        except tulle.client.MeshError as error:
            return error.status, {"mesh": error.reason}
        return response.status_code, _json(response.content)
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30) as r:
            return r.status, _json(r.read())
    except urllib.error.HTTPError as error:
        return error.code, _json(error.read())


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    got = {name: environ[key] for name in TRACE_HEADERS
           if (key := "HTTP_" + name.upper().replace("-", "_")) in environ}  # fmt: skip
    answer: dict[str, Any]
    if environ.get("PATH_INFO") == "/ready":
        status, answer = 200, {"ready": True}
    else:
        hops, fail = query.get("to", []), query.get("fail", [""])[0]
        status, answer = 200, {"name": NAME, "headers": got}
        if hops:
            rest = urllib.parse.urlencode({"to": hops[1:], "fail": fail}, doseq=True)
            code, reply = _call(f"http://{hops[0]}/hop?{rest}", got)
            answer["next"] = {"status": code, "answer": reply}
            status = code
        elif fail == "1":
            status = 503
    body = json.dumps(answer).encode()
    start_response(f"{status} X", [("content-type", "application/json"),
                                   ("content-length", str(len(body)))])  # fmt: skip
    return [body]


def main() -> None:
    host, port = os.environ.get("HOST", "127.0.0.1"), int(os.environ["PORT"])
    if LIBRARY:
        from tulle.client.wsgi import MeshMiddleware, make_server

        make_server(host, port, MeshMiddleware(app)).serve_forever()
    else:
        from wsgiref.simple_server import WSGIRequestHandler
        from wsgiref.simple_server import make_server as plain

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

        plain(host, port, app, handler_class=Quiet).serve_forever()


if __name__ == "__main__":
    main()
