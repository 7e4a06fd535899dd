"""Library mode terminates mTLS (issue 17 §2): real processes against a real control plane on
its secure xDS port, every workload with a bootstrap token and a certificate from the mesh CA.

- ``payment``: the example ASGI app (``examples/library/app.py``) under ``tulle.client.uvicorn``,
  STRICT, with an AuthorizationPolicy that admits only frontend's principal;
- ``frontend``: the same example app as a library-mode caller (library -> library);
- ``intruder``: a sidecar (sidecar -> library), and certificates the test asks the CA for;
- ``ledger``: a WSGI app under ``tulle.client.wsgi_server`` (``wsgi_ledger.py``), PERMISSIVE
  by default, whose policy admits plain text on ``/public`` and frontend's principal anywhere.

Certificates live 20 s here, so the rotation test sees each server present a renewed one."""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from cryptography import x509
from prometheus_client import generate_latest

import tulle.client
from tests.client.wsgi_ledger import Quiet as QuietHandler
from tests.client.wsgi_ledger import ledger
from tests.e2e.conftest import (
    BIN,
    EXAMPLES,
    ControlPlane,
    LibraryApp,
    Processes,
    Sidecar,
    _stop,
    free_port,
    start_control_plane,
    wait_until,
)
from tests.tls_material import make_material
from tulle.client.inbound_tls import NOT_TERMINATED
from tulle.client.wsgi import MeshMiddleware, MeshWSGIServer
from tulle.control.certificates import PATH
from tulle.security.material import WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import BootstrapTokens, read_token_file
from tulle.xds.grpc_stream import unary_call

HERE = Path(__file__).parent


class QuietWsgiref(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return


ROOT = HERE.parent.parent

pytestmark = pytest.mark.timeout(240)

WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  command: [python3, app.py]
  ports: [{{name: http, port: 8080}}]
  mesh: library
---
"""
CONFIG = "".join(WORKLOAD.format(name=n) for n in ("payment", "frontend", "intruder", "ledger"))
CONFIG += """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: tulle-system}
spec: {workloadCertificateLifetime: 20s}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: payment-strict}
spec:
  selector: {matchLabels: {app: payment}}
  mtls: {mode: STRICT}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payment-callers}
spec:
  selector: {matchLabels: {app: payment}}
  action: ALLOW
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ledger-callers}
spec:
  selector: {matchLabels: {app: ledger}}
  action: ALLOW
  rules:
    - to: [{operation: {paths: ["/public*"]}}]
    - from: [{source: {principals: ["cluster.local/ns/default/sa/frontend"]}}]
"""
LEDGER_MODE = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: ledger-mode}}
spec:
  selector: {{matchLabels: {{app: ledger}}}}
  mtls: {{mode: {mode}}}
"""

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"
PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
LEDGER = "spiffe://cluster.local/ns/default/sa/ledger"
TLS_MODE = "security.istio.io/tlsMode"


def node_id(pod: str) -> str:
    return f"library~127.0.0.1~{pod}.default~default.svc.cluster.local"


@dataclass
class Mesh:
    """The module's control plane and its workloads."""

    plane: ControlPlane
    payment: LibraryApp
    frontend: LibraryApp
    intruder: Sidecar
    ledger: LibraryApp
    logs: Path
    ca_loop: asyncio.AbstractEventLoop  # where the test's own CSRs go (see credentials())

    @property
    def root(self) -> Path:
        return self.plane.state_dir / "root-cert.pem"

    def token(self, service: str, pod: str) -> Path:
        return BootstrapTokens(self.plane.state_dir).issue("default", service, f"{pod}.default")

    def log(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text()


def secure_app(plane: ControlPlane, procs: Processes, pod: str, service: str, log: Path,
               command: list[str]) -> LibraryApp:  # fmt: skip
    """``command`` (a library-mode app) as replica ``pod`` of ``service``, on the secure xDS
    port with a bootstrap token of its own (so with a certificate), registering itself."""
    app = LibraryApp(free_port(), free_port(), node_id(pod))
    token = BootstrapTokens(plane.state_dir).issue("default", service, f"{pod}.default")
    env = {
        **os.environ, "TULLE_XDS_ADDRESS": f"127.0.0.1:{plane.secure_xds_port}",
        "TULLE_XDS_ROOT_CERT": str(plane.state_dir / "root-cert.pem"),
        "TULLE_TOKEN_FILE": str(token), "TULLE_SERVER": plane.api, "TULLE_NODE_ID": app.node,
        "TULLE_SERVICE": service, "TULLE_SERVICE_PORT": "8080", "PORT": str(app.port),
        "TULLE_METRICS_PORT": str(app.metrics_port), "PYTHONPATH": str(ROOT),
    }  # fmt: skip
    with open(log, "w") as output:
        app.proc = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT,
                                    text=True, env=env)  # fmt: skip
    procs.started.append(app.proc)
    wait_until(app.serving, timeout=30)
    return app


def endpoint_labels(plane: ControlPlane, service: str, port: int) -> dict[str, str]:
    items = httpx.get(f"{plane.api}/api/v1/endpoints", headers=plane.auth, timeout=10).json()
    wanted = f"{service}.default.svc.cluster.local|127.0.0.1:{port}"
    labels: dict[str, str] = next(i for i in items["items"] if i["id"] == wanted)["labels"]
    return labels


def in_the_mesh(plane: ControlPlane, service: str, port: int) -> bool:
    """The endpoint is registered with Istio's label: mesh clients speak mTLS to it."""
    try:
        return endpoint_labels(plane, service, port).get(TLS_MODE) == "istio"
    except StopIteration:
        return False


def answers(call: Callable[[], httpx.Response], status: int) -> Callable[[], bool]:
    """A condition: ``call()`` answers ``status`` (config still on its way: anything else)."""

    def condition() -> bool:
        try:
            return call().status_code == status
        except httpx.HTTPError:
            return False

    return condition


def refuses_plain_text(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/public", timeout=30)
    except httpx.HTTPError:
        return True
    return False


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root = tmp_path_factory.mktemp("library-mtls")
    config = root / "config"
    config.mkdir()
    (config / "mesh.yaml").write_text(CONFIG)
    plane = start_control_plane(root / "state", config)
    procs = Processes()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="test-ca-calls", daemon=True)
    thread.start()
    try:
        example = [sys.executable, str(EXAMPLES / "library" / "app.py")]
        payment = secure_app(plane, procs, "payment-0", "payment", root / "payment.log", example)
        frontend = secure_app(plane, procs, "frontend-0", "frontend", root / "frontend.log",
                              example)  # fmt: skip
        ledger = secure_app(plane, procs, "ledger-0", "ledger", root / "ledger.log",
                            [sys.executable, str(HERE / "wsgi_ledger.py")])  # fmt: skip
        token = BootstrapTokens(plane.state_dir).issue("default", "intruder", "intruder-0.default")
        intruder = procs.sidecar(
            plane, "intruder-0", None, "--xds", f"127.0.0.1:{plane.secure_xds_port}",
            "--xds-root-cert", str(plane.state_dir / "root-cert.pem"), "--token-file", str(token),
        )  # fmt: skip
        mesh = Mesh(plane, payment, frontend, intruder, ledger, root, loop)
        # Registered as in the mesh, config in force (the policies answer), and the callers'
        # endpoints of payment and ledger say mTLS.
        for app, service in ((payment, "payment"), (ledger, "ledger"), (frontend, "frontend")):
            wait_until(lambda a=app, s=service: in_the_mesh(plane, s, a.port), timeout=30)
        wait_until(answers(lambda: mtls_get(payment.port, "/", credentials(mesh, "intruder")),
                           403), timeout=30)  # fmt: skip
        wait_until(answers(lambda: ledger.get("/secret"), 403), timeout=30)

        def called(url: str) -> Callable[[], bool]:
            return lambda: frontend.get("/call", params={"url": url}).json().get("status") == 200

        wait_until(called("http://payment:8080/"), timeout=30)
        wait_until(called("http://ledger:8080/"), timeout=30)
        with intruder.client() as client:
            wait_until(answers(lambda: client.get("http://payment:8080/"), 403), timeout=30)
        yield mesh
    finally:
        procs.stop_all()
        _stop(plane.proc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def credentials(mesh: Mesh, service: str) -> WorkloadCredentials:
    """A fresh certificate of ``service``'s identity from the mesh CA, as a workload gets one
    (certificates live 20 s here: each test asks for its own)."""
    token = read_token_file(mesh.token(service, f"{service}-t"))
    context = ssl.create_default_context(cafile=str(mesh.root))

    async def sign(request: bytes) -> bytes:
        address = f"127.0.0.1:{mesh.plane.secure_xds_port}"
        return await unary_call(
            address, PATH, request, context, [("authorization", f"Bearer {token}")]
        )

    # On a loop that keeps running: a call's TLS connection is closed after it returns (the
    # close waits for the control plane's close_notify), which asyncio.run would cut short.
    future = asyncio.run_coroutine_threadsafe(CertificateKeeper(sign).renew_once(), mesh.ca_loop)
    return future.result(30)


def mtls_get(port: int, path: str, creds: WorkloadCredentials, **kwargs: Any) -> httpx.Response:
    """GET over mTLS with ``creds``; the server must present a mesh certificate."""
    return httpx.get(f"https://127.0.0.1:{port}{path}", verify=creds.client_context(),
                     timeout=30, **kwargs)  # fmt: skip


def server_certificate(port: int, creds: WorkloadCredentials) -> x509.Certificate:
    """The certificate the server on ``port`` presents to a mesh client now."""
    context = creds.client_context()
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def spiffe_of(cert: x509.Certificate) -> list[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def refused_by_openssl_and_curl(port: int, tmp_path: Path) -> None:
    """openssl and curl without a client certificate, and curl with a certificate of
    frontend's identity from another CA, get nothing from the app."""
    done = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-quiet", "-verify_quiet"],
        input="GET /pay HTTP/1.1\r\nHost: x\r\n\r\n", capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert "HTTP/1.1" not in done.stdout, done.stdout
    assert "alert" in done.stderr.lower() or done.returncode != 0, done.stderr
    other = make_material(tmp_path)
    for extra in ([], ["--cert", str(other.frontend.cert), "--key", str(other.frontend.key)]):
        done = subprocess.run(
            ["curl", "-sS", "--insecure", "--max-time", "30", *extra,
             f"https://127.0.0.1:{port}/pay"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode != 0, (extra, done.stdout)
        assert "{" not in done.stdout, done.stdout


# --- uvicorn (payment, STRICT) -------------------------------------------------------------


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


# --- WSGI (ledger, PERMISSIVE unless a test says otherwise) --------------------------------


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


# --- rotation -------------------------------------------------------------------------------


def test_new_connections_get_the_renewed_certificate_without_a_restart(mesh: Mesh) -> None:
    ports = {"payment": mesh.payment.port, "ledger": mesh.ledger.port}
    first = {name: server_certificate(port, credentials(mesh, "frontend"))
             for name, port in ports.items()}  # fmt: skip
    assert spiffe_of(first["payment"]) == [PAYMENT]
    assert spiffe_of(first["ledger"]) == [LEDGER]

    def renewed(name: str) -> bool:
        now = server_certificate(ports[name], credentials(mesh, "frontend"))
        return now.serial_number != first[name].serial_number

    for name in ports:
        wait_until(lambda name=name: renewed(name), timeout=60, interval=0.5)
    assert mesh.payment.proc is not None
    assert mesh.payment.proc.poll() is None  # the same process: no restart
    # The renewed certificate serves requests as the first did.
    answer = mtls_get(mesh.payment.port, "/pay", credentials(mesh, "frontend"))
    assert answer.status_code == 200


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


# --- without an identity, or without a server that terminates mTLS ---------------------------


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
