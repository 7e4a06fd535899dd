"""Library mode terminates mTLS (issue 17 §2): real processes against a real control plane on
its secure xDS port, every workload with a bootstrap token and a certificate from the mesh CA.

- ``payment``: the example ASGI app (``examples/library/app.py``) under ``tulle.client.uvicorn``,
  STRICT, with an AuthorizationPolicy that admits only frontend's principal;
- ``frontend``: the same example app as a library-mode caller (library -> library);
- ``intruder``: a sidecar (sidecar -> library), and certificates the test asks the CA for;
- ``ledger``: a WSGI app under ``tulle.client.wsgi_server`` (``wsgi_ledger.py``), PERMISSIVE
  by default, whose policy admits plain text on ``/public`` and frontend's principal anywhere.

Certificates live 20 s here, so the rotation test sees each server present a renewed one.

The mesh is the package-scoped ``mesh`` fixture (tests/client/conftest.py): one for every
tests/client/test_library_mtls_*.py module. Here too: what those tests share to reach it."""

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
from wsgiref.simple_server import WSGIRequestHandler

import httpx
import pytest
from cryptography import x509

from tests.e2e.conftest import (
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


@pytest.fixture(scope="package")
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
