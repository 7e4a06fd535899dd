"""Mutual TLS between sidecars under ``tulle up`` (issue 17 §2), with real processes and real
clients: every sidecar gets its certificate from the mesh CA; frontend reaches a STRICT payment
over mTLS and payment's app sees who called (``X-Forwarded-Client-Cert``, from the handshake,
whatever the caller's app wrote); an AuthorizationPolicy that admits only frontend's principal
answers another workload 403; plain text, ``openssl s_client`` and curl without a certificate,
and a certificate from another CA are refused by payment's STRICT port."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.local.conftest import Mesh, backend_workload, mesh_processes, running_mesh, tulle
from tests.tls_material import Material, make_material

pytestmark = pytest.mark.timeout(180)

CONFIG = (
    backend_workload("frontend") + backend_workload("intruder") + backend_workload("payment")
    + """\
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
"""
)  # fmt: skip

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("mtls"), CONFIG) as mesh:
        yield mesh


def address(mesh: Mesh, replica: str) -> str:
    """Where callers reach the replica: its sidecar's inbound listener."""
    return str(mesh.replica(replica)["address"])


def call(mesh: Mesh, caller: str, path: str, headers: dict[str, str] | None = None) -> Any:
    """``caller``'s app calls payment through its own sidecar (``/call`` of the test backend,
    as an unchanged app would); payment's answer as the caller's app got it."""
    url = urllib.parse.quote(f"http://payment:8080{path}", safe="")
    reply = httpx.get(
        f"http://{address(mesh, f'{caller}-0')}/call?url={url}", headers=headers, timeout=30
    )
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_frontend_reaches_strict_payment_over_mtls_and_payment_sees_who(mesh: Mesh) -> None:
    answer = call(mesh, "frontend", "/pay")
    assert answer["status"] == 200, answer
    seen = json.loads(answer["body"])
    assert seen["name"] == "payment"
    assert seen["headers"]["x-forwarded-client-cert"] == f"By={PAYMENT};URI={FRONTEND}"


def test_another_workload_is_denied_by_the_principal_policy(mesh: Mesh) -> None:
    answer = call(mesh, "intruder", "/pay")
    assert answer["status"] == 403, answer
    assert answer["body"] == "denied: no ALLOW policy matches (default/payment-callers)\n"


def test_a_forged_client_cert_header_is_replaced_by_what_the_handshake_proved(
    mesh: Mesh,
) -> None:
    # The intruder's app cannot pass as frontend by writing the header itself: what reaches
    # payment is what its sidecar verified. (frontend's app forwards nothing: /call sends
    # only the URL; so the forgery is tried from outside, straight at frontend's inbound.)
    forged = {"x-forwarded-client-cert": f"URI={FRONTEND}"}
    reply = httpx.get(f"http://{address(mesh, 'frontend-0')}/x", headers=forged, timeout=30)
    assert reply.status_code == 200
    assert "x-forwarded-client-cert" not in reply.json()["headers"]  # plain text: no peer


def test_strict_refuses_plain_text_and_clients_without_a_mesh_certificate(
    mesh: Mesh, tmp_path: Path
) -> None:
    payment = address(mesh, "payment-0")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{payment}/pay", timeout=30)
    # openssl without a client certificate: the server asks for one and refuses the session.
    done = subprocess.run(
        ["openssl", "s_client", "-connect", payment, "-quiet", "-verify_quiet"],
        input="GET /pay HTTP/1.1\r\nHost: payment\r\n\r\n", capture_output=True, text=True,
        timeout=30, check=False,
    )  # fmt: skip
    assert '"name": "payment"' not in done.stdout
    assert "alert" in done.stderr.lower() or done.returncode != 0, done.stderr
    # curl with none, and with a valid-looking SPIFFE certificate of frontend from another CA.
    other: Material = make_material(tmp_path)
    for extra in ([], ["--cert", str(other.frontend.cert), "--key", str(other.frontend.key)]):
        done = subprocess.run(
            ["curl", "-sS", "--insecure", "--max-time", "20", *extra, f"https://{payment}/pay"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert done.returncode != 0, (extra, done.stdout)
        assert '"name": "payment"' not in done.stdout
    metrics = httpx.get(
        f"http://127.0.0.1:{mesh.replica('payment-0')['stats_port']}/stats/prometheus",
        timeout=30,
    ).text
    assert 'tulle_inbound_tls_refused_total{reason="plain_text"}' in metrics
    assert 'tulle_inbound_tls_refused_total{reason="handshake_failed"}' in metrics


def test_proxy_config_shows_a_nodes_certificate_and_proxy_status_its_expiry(mesh: Mesh) -> None:
    api = mesh.status()["api"]
    status = httpx.get(f"{api}/api/v1/proxy-status", headers=mesh.auth, timeout=30).json()
    payment = next(n for n in status["nodes"] if "~payment-0." in n["node"])
    assert payment["secure"] is True
    assert payment["certificate"]["identity"] == PAYMENT
    shown = tulle(
        "proxy-config", payment["node"], "--type", "secrets", "-o", "json",
        "--server", api, "--token", mesh.token,
    )  # fmt: skip
    default, bundle = json.loads(shown.stdout)
    assert default["name"] == "default"
    assert default["identity"] == PAYMENT
    assert default["serial"] == payment["certificate"]["serial"]
    assert default["notBefore"] < default["notAfter"] == payment["certificate"]["notAfter"]
    assert "key" not in json.dumps(default).lower()  # the key never left the sidecar
    assert bundle["name"] == "ROOTCA"
    (root,) = bundle["roots"]
    assert root["subject"].startswith("CN=Tulle root CA cluster.local ")
    table = tulle("proxy-status", "--server", api, "--token", mesh.token).stdout
    assert "CERTIFICATE EXPIRES" in table
    assert default["notAfter"][:19] in table


def test_sidecars_never_load_cryptography_only_the_control_plane_does(mesh: Mesh) -> None:
    """A sidecar makes its key and CSR and reads its certificates with the libcrypto ``ssl``
    loaded (``tulle.security.libcrypto``): the ``cryptography`` package, whose wheel carries its
    own OpenSSL (~12 MB of RSS), is mapped by the control plane (its CA) only."""
    answer = call(mesh, "frontend", "/pay")  # both ends hold certificates from the mesh CA
    assert answer["status"] == 200, answer
    processes = mesh_processes(mesh.state_dir)
    # `python -m tulle proxy ...`, or the runner's `python -P -m tulle.proxy {settings}`
    sidecars = [pid for pid, command in processes if re.search(r" -m tulle[ .]proxy ", command)]
    (plane,) = [pid for pid, command in processes if " -m tulle controlplane " in command]
    assert len(sidecars) == 3, [command[:60] for _, command in processes]

    def maps(pid: int) -> str:
        return Path(f"/proc/{pid}/maps").read_text()

    for pid in sidecars:
        assert "libcrypto.so" in maps(pid)  # the system OpenSSL, which ssl uses
        assert "cryptography" not in maps(pid), pid
    assert "/cryptography/hazmat/bindings/_rust" in maps(plane)
