"""Library mode terminates mTLS (issue 17 §2), on the mesh of tests/client/library_mesh.py: the
STRICT uvicorn app (payment) admits frontend over mTLS and shows who called, refuses plain text
and foreign certificates, is called by a library app and by a sidecar as their own identities;
and ``python -m tulle.client.uvicorn`` serves with mTLS."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.client.library_mesh import (
    FRONTEND,
    INTRUDER,
    LEDGER,
    PAYMENT,
    TLS_MODE,
    Mesh,
    credentials,
    endpoint_labels,
    in_the_mesh,
    mtls_get,
    node_id,
    refused_by_openssl_and_curl,
)
from tests.e2e.conftest import (
    BIN,
    EXAMPLES,
    LibraryApp,
    _stop,
    free_port,
    wait_until,
)

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.xdist_group("library-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_strict_uvicorn_app_admits_frontend_over_mtls_and_shows_who_called(mesh: Mesh) -> None:
    forged = {
        "x-forwarded-client-cert": "URI=spiffe://cluster.local/ns/default/sa/admin",
        "x-tulle-source-workload": "admin",
    }
    answer = mtls_get(mesh.payment.port, "/pay", credentials(mesh, "frontend"), headers=forged)
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    assert seen["workload"] == "payment"
    # What the handshake proved, never what the caller wrote (its source-workload claim is
    # dropped over mTLS, as the sidecar drops it).
    assert seen["client_cert"] == f"By={PAYMENT};URI={FRONTEND}"
    assert seen["caller"] == ""
    # Another mesh identity passes the TLS gate and is denied by the principals policy.
    denied = mtls_get(mesh.payment.port, "/pay", credentials(mesh, "intruder"))
    assert denied.status_code == 403
    assert denied.headers["x-tulle-error"] == (
        "denied: no ALLOW policy matches (default/payment-callers)"
    )
    # The endpoint says it is in the mesh, so mesh clients speak mTLS to it (auto mTLS).
    assert endpoint_labels(mesh.plane, "payment", mesh.payment.port)[TLS_MODE] == "istio"
    # The callee's metrics name the caller its certificate proved.
    served = [
        line for line in mesh.payment.metrics().splitlines()
        if line.startswith("tulle_requests_total{") and 'reporter="destination"' in line
        and f'source_principal="{FRONTEND}"' in line
    ]  # fmt: skip
    assert served, mesh.payment.metrics()
    assert 'connection_security_policy="mutual_tls"' in served[0]
    assert f'destination_principal="{PAYMENT}"' in served[0]
    assert 'source_workload="frontend"' in served[0]


def test_strict_uvicorn_app_refuses_plain_text_and_foreign_certificates(
    mesh: Mesh, tmp_path: Path
) -> None:
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{mesh.payment.port}/pay", timeout=30)
    refused_by_openssl_and_curl(mesh.payment.port, tmp_path)
    metrics = mesh.payment.metrics()
    assert 'tulle_inbound_tls_refused_total{reason="plain_text"}' in metrics
    assert 'tulle_inbound_tls_refused_total{reason="handshake_failed"}' in metrics
    log = mesh.log("payment")
    assert "refused: plain text refused: STRICT mTLS" in log, log[-2000:]
    assert "inbound connection from 127.0.0.1:" in log
    assert "refused: peer did not present a certificate" in log
    assert "refused: certificate verify failed" in log


def test_a_library_app_calls_the_strict_library_app_over_mtls(mesh: Mesh) -> None:
    url = "http://payment:8080/from-frontend"
    reply = mesh.frontend.get("/call", params={"url": url})
    assert reply.status_code == 200
    answer = reply.json()
    assert answer["status"] == 200, answer
    # payment is STRICT (plain text would have been refused) and saw frontend's certificate.
    assert answer["body"]["client_cert"] == f"By={PAYMENT};URI={FRONTEND}"
    assert answer["body"]["path"] == "/from-frontend"
    # And the WSGI library app too (ledger admits frontend's principal on every path).
    reply = mesh.frontend.get("/call", params={"url": "http://ledger:8080/secret"})
    answer = reply.json()
    assert answer["status"] == 200, answer
    assert answer["body"]["client_cert"] == f"By={LEDGER};URI={FRONTEND}"
    assert answer["body"]["scheme"] == "https"


def test_a_sidecar_calls_the_library_app_over_mtls_as_its_own_identity(mesh: Mesh) -> None:
    with mesh.intruder.client() as client:
        denied = client.get("http://payment:8080/pay")
        # The sidecar passed payment's STRICT gate with its certificate: the policy, which
        # sees the intruder's principal, answers.
        assert denied.status_code == 403
        assert denied.headers["x-tulle-error"] == (
            "denied: no ALLOW policy matches (default/payment-callers)"
        )
        public = client.get("http://ledger:8080/public")
    assert public.status_code == 200
    assert public.json()["client_cert"] == f"By={LEDGER};URI={INTRUDER}"


def test_python_m_tulle_client_uvicorn_serves_with_mtls(mesh: Mesh, tmp_path: Path) -> None:
    """The command-line form: ``python -m tulle.client.uvicorn module:app`` (uvicorn's
    options, plus the mTLS protocol) registers the endpoint as in the mesh, and its PERMISSIVE
    port takes mTLS and plain text."""
    port = free_port()
    token = mesh.token("frontend", "frontend-1")
    env = {
        **os.environ, "TULLE_XDS_ADDRESS": f"127.0.0.1:{mesh.plane.secure_xds_port}",
        "TULLE_XDS_ROOT_CERT": str(mesh.root), "TULLE_TOKEN_FILE": str(token),
        "TULLE_SERVER": mesh.plane.api, "TULLE_NODE_ID": node_id("frontend-1"),
        "TULLE_SERVICE": "frontend", "TULLE_SERVICE_PORT": "8080", "PORT": str(port),
        "PYTHONPATH": str(EXAMPLES / "library"),
    }  # fmt: skip
    with open(tmp_path / "cli.log", "w") as output:
        proc = subprocess.Popen(
            [str(BIN / "python"), "-m", "tulle.client.uvicorn", "app:app", "--host",
             "127.0.0.1", "--port", str(port), "--log-level", "warning"],
            stdout=output, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
    try:
        app = LibraryApp(port, 0, node_id("frontend-1"), proc)
        wait_until(app.serving, timeout=30)
        wait_until(lambda: in_the_mesh(mesh.plane, "frontend", port), timeout=30)
        forged = {"x-forwarded-client-cert": f"URI={PAYMENT}"}
        answer = mtls_get(port, "/", credentials(mesh, "payment"), headers=forged)
        assert answer.status_code == 200
        assert answer.json()["client_cert"] == f"By={FRONTEND};URI={PAYMENT}"
        # frontend is PERMISSIVE: plain text on the same port too, with no client cert header
        # (the forged one is dropped).
        plain = httpx.get(f"http://127.0.0.1:{port}/", headers=forged, timeout=30)
        assert plain.status_code == 200
        assert "client_cert" not in plain.json()
    finally:
        _stop(proc)
