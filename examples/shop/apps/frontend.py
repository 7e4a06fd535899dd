"""The shop's frontend: ``GET /`` calls catalog, cart, payment and auth, and answers what each
said. A plain app: it calls services by name through ``HTTP_PROXY`` (its sidecar), as any HTTP
client does, and gRPC goes to the same sidecar with the service as the authority; in a pod
(``tulle up --pods``, no proxy variable) it simply dials the names. Headers
``x-canary`` and ``x-chaos`` are passed on, so a caller can pick the canary or inject faults;
and so are the trace headers (W3C, B3, ``x-request-id``), on the HTTP calls and in the gRPC
call's metadata, so that a page is one trace: what every app in a mesh must do
(docs/observability.md, "Passing trace headers on")."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("GRPC_DNS_RESOLVER", "native")  # names from /etc/hosts, as libc does

import grpc

sys.path.insert(0, str(Path(__file__).parent))
from common import serve

TRACE_HEADERS = ("traceparent", "tracestate", "b3", "x-b3-traceid", "x-b3-spanid",
                 "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "x-request-id")  # fmt: skip
PASSED_ON = ("x-canary", "x-chaos", *TRACE_HEADERS)
if os.environ.get("HTTP_PROXY"):  # the sidecar as a proxy: gRPC to it, the service as authority
    auth_channel = grpc.insecure_channel(
        urlsplit(os.environ["HTTP_PROXY"]).netloc,
        options=[("grpc.default_authority", "auth:50051"), ("grpc.enable_http_proxy", 0)],
    )
else:  # in a pod: dial the service by name; the pod's rules redirect it to the sidecar
    auth_channel = grpc.insecure_channel("auth:50051")
auth_check = auth_channel.unary_unary("/auth.Auth/Check")


def call(method: str, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """One call through the mesh: its status and answer, or the mesh's reason."""
    passed = {k: v for k, v in headers.items() if k in PASSED_ON}
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method, headers=passed)
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return {"status": reply.status, "answer": json.loads(reply.read() or b"null")}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "reason": error.headers.get("x-tulle-error", ""),
                "answer": error.read().decode(errors="replace")[:200]}  # fmt: skip
    except OSError as error:
        return {"status": 0, "reason": str(error)}


def shop(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    if path != "/":
        return 404, {"error": f"no {path}"}
    metadata = [(k, v) for k, v in headers.items() if k in TRACE_HEADERS]
    try:
        auth_check(b"user", timeout=2, metadata=metadata)
        auth = {"status": 200}
    except grpc.RpcError as error:
        auth = {"status": 0, "reason": f"{error.code().name}: {error.details()}"}
    page = {
        "auth": auth,
        "catalog": call("GET", "http://catalog:8080/items", headers),
        "cart": call("GET", "http://cart:8080/cart", headers),
        "payment": call("POST", "http://payment:8080/pay", headers),
    }
    ok = all(part["status"] == 200 for part in page.values())
    return (200 if ok else 502), page


if __name__ == "__main__":
    serve("frontend", shop)
