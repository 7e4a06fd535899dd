"""Library mode terminates mTLS (issue 17 §2), on the mesh of tests/client/library_mesh.py: STRICT
holds without an identity or without a server that terminates mTLS."""

from __future__ import annotations

import threading
from typing import Any
from wsgiref.simple_server import make_server

import httpx
import pytest
from prometheus_client import generate_latest

import tulle.client
from tests.client.library_mesh import (
    Mesh,
    QuietWsgiref,
    endpoint_labels,
    node_id,
)
from tests.client.wsgi_ledger import Quiet as QuietHandler
from tests.client.wsgi_ledger import ledger
from tulle.client.inbound_tls import NOT_TERMINATED
from tulle.client.wsgi import MeshMiddleware, MeshWSGIServer

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("library-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_strict_holds_without_an_identity_or_a_terminating_server(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A replica of payment (STRICT) in this process on the plain-text xDS port, so with no
    certificate: behind Tulle's WSGI server every connection is refused, and its endpoint is
    registered without the mesh label (callers would speak plain text, which STRICT refuses);
    behind a server that does not terminate mTLS, the middleware refuses each request."""
    monkeypatch.setenv("TULLE_TOKEN_FILE", str(mesh.token("payment", "payment-1")))
    tulle.client.configure(xds_address=f"127.0.0.1:{mesh.plane.xds_port}",
                           node_id=node_id("payment-1"), server=mesh.plane.api,
                           access_log=False)  # fmt: skip
    registry = tulle.client.metrics_registry()
    servers: list[Any] = []
    middleware = MeshMiddleware(ledger, register=False)
    try:
        tulle.client.wait_ready(30)
        terminating = MeshWSGIServer(("127.0.0.1", 0), QuietHandler)
        plain = make_server("127.0.0.1", 0, middleware, handler_class=QuietWsgiref)
        for server in (terminating, plain):
            servers.append(server)
            threading.Thread(target=server.serve_forever, daemon=True).start()
        port = terminating.server_address[1]
        registered = MeshMiddleware(ledger, port=port, service="payment")
        terminating.set_app(registered)
        try:
            assert "security.istio.io/tlsMode" not in endpoint_labels(mesh.plane, "payment", port)
            with pytest.raises(httpx.HTTPError):
                httpx.get(f"http://127.0.0.1:{port}/", timeout=30)
        finally:
            registered.close()
        answer = httpx.get(f"http://127.0.0.1:{plain.server_address[1]}/", timeout=30)
        assert answer.status_code == 403
        assert answer.headers["x-tulle-error"] == NOT_TERMINATED
        exposition = generate_latest(registry).decode()
        assert 'tulle_inbound_tls_refused_total{reason="no_certificate"} 1.0' in exposition
        assert 'tulle_inbound_tls_refused_total{reason="plain_text"} 1.0' in exposition
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()
        middleware.close()
        tulle.client.shutdown()
