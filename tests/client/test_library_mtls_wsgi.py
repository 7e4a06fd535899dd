"""Library mode terminates mTLS (issue 17 §2), on the mesh of tests/client/library_mesh.py: the
WSGI app (ledger): its PERMISSIVE port takes plain text and mTLS; STRICT and DISABLE."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.client.library_mesh import (
    FRONTEND,
    LEDGER,
    LEDGER_MODE,
    TLS_MODE,
    Mesh,
    answers,
    credentials,
    endpoint_labels,
    mtls_get,
    refused_by_openssl_and_curl,
    refuses_plain_text,
)
from tests.e2e.conftest import (
    wait_until,
)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("library-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_wsgi_permissive_port_takes_plain_text_and_mtls(mesh: Mesh) -> None:
    port = mesh.ledger.port
    forged = {"x-forwarded-client-cert": f"URI={FRONTEND}", "x-tulle-source-workload": "frontend"}
    plain = mesh.ledger.get("/public", headers=forged)
    assert plain.status_code == 200
    assert plain.json() == {
        "principal": None, "client_cert": None, "scheme": "http", "source_claim": "frontend",
    }  # fmt: skip
    # Plain text has no principal: the principals rule cannot match it.
    secret = mesh.ledger.get("/secret", headers=forged)
    assert secret.status_code == 403
    assert secret.headers["x-tulle-error"] == (
        "denied: no ALLOW policy matches (default/ledger-callers)"
    )
    answer = mtls_get(port, "/secret", credentials(mesh, "frontend"), headers=forged)
    assert answer.status_code == 200
    assert answer.json() == {
        "principal": FRONTEND, "client_cert": f"By={LEDGER};URI={FRONTEND}", "scheme": "https",
        "source_claim": None,
    }  # fmt: skip
    denied = mtls_get(port, "/secret", credentials(mesh, "intruder"))
    assert denied.status_code == 403
    # The middleware registered the endpoint before the server started; the server's start
    # re-registered it as in the mesh.
    assert endpoint_labels(mesh.plane, "ledger", port)[TLS_MODE] == "istio"


def test_wsgi_strict_and_disable(mesh: Mesh, tmp_path: Path) -> None:
    port = mesh.ledger.port
    frontend = credentials(mesh, "frontend")
    mesh.plane.apply(LEDGER_MODE.format(mode="STRICT"))
    try:
        wait_until(lambda: refuses_plain_text(port), timeout=30)
        refused_by_openssl_and_curl(port, tmp_path)
        answer = mtls_get(port, "/secret", frontend)
        assert answer.status_code == 200
        assert answer.json()["principal"] == FRONTEND
        metrics = mesh.ledger.metrics()
        assert 'tulle_inbound_tls_refused_total{reason="plain_text"}' in metrics
        assert 'tulle_inbound_tls_refused_total{reason="handshake_failed"}' in metrics
        log = mesh.log("ledger")
        assert "inbound connection from 127.0.0.1:" in log
        assert "refused: plain text refused: STRICT mTLS" in log, log[-2000:]
        assert "refused: peer did not present a certificate" in log
        assert "refused: certificate verify failed" in log
        # DISABLE: plain text only; a ClientHello is passed on as bytes, which is not HTTP.
        mesh.plane.apply(LEDGER_MODE.format(mode="DISABLE"))
        wait_until(answers(lambda: mesh.ledger.get("/public"), 200), timeout=30)
        with pytest.raises(httpx.HTTPError):
            mtls_get(port, "/public", frontend)
    finally:
        mesh.plane.apply(LEDGER_MODE.format(mode="PERMISSIVE"))
        wait_until(answers(lambda: mtls_get(port, "/", credentials(mesh, "frontend")), 200),
                   timeout=30)  # fmt: skip
