"""Identity in telemetry under ``tulle up`` (issue 17), with real processes, real TLS and a real
client holding a real mesh certificate: a caller that forges ``x-tulle-source-workload`` over
mTLS is reported (metrics) and authorized as its certificate says, and the header never reaches
the app; sidecar-to-sidecar calls, and a library app's calls to a sidecar, carry the principals
and ``connection_security_policy`` on both reporters, and the peer principal is in the access
log; the certificate expiry gauge of a sidecar and of a library app; and
``tulle check`` warning about a STRICT workload's plain-text callers and a policy naming a
principal no workload has."""

from __future__ import annotations

import json
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import wait_until
from tests.local.conftest import Mesh, backend_workload, running_mesh, tulle, workload
from tulle.security.keys import make_csr, new_private_key, private_key_pem
from tulle.security.material import BUNDLE_FILE, WorkloadCredentials
from tulle.security.spiffe import SpiffeId
from tulle.security.tokens import BootstrapTokens
from tulle.xds.grpc_stream import CA_SIGN_PATH

pytestmark = pytest.mark.timeout(240)

CONFIG = (
    backend_workload("frontend")
    + backend_workload("intruder")
    + backend_workload("payment")
    + workload("ledger", "[python3, examples/library/app.py]", mesh="library")
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
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: auditors}
spec:
  selector: {matchLabels: {app: frontend}}
  action: DENY
  rules:
    - from: [{source: {principals: ["cluster.local/ns/default/sa/auditor"]}}]
"""
)

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
INTRUDER = "spiffe://cluster.local/ns/default/sa/intruder"
PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
LEDGER = "spiffe://cluster.local/ns/default/sa/ledger"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("identity"), CONFIG) as mesh:
        yield mesh


def certificate_of(mesh: Mesh, replica: str, directory: Path) -> Path:
    """A certificate of ``replica``'s identity, from the mesh CA with that replica's bootstrap
    token (as any process holding it could get one; a stock grpcio client makes the call),
    written to ``directory``."""
    control = mesh.state_dir / "controlplane"
    token = BootstrapTokens(control).token_path(f"{replica}.default").read_text().strip()
    bundle = (control / BUNDLE_FILE).read_bytes()
    key = new_private_key()
    account = replica.rsplit("-", 1)[0]
    csr = make_csr(key, SpiffeId("cluster.local", "default", account))
    credentials = grpc.ssl_channel_credentials(root_certificates=bundle)
    with grpc.secure_channel(mesh.status()["secure_xds"], credentials) as channel:
        sign = channel.unary_unary(CA_SIGN_PATH)
        answer = json.loads(
            sign(json.dumps({"csr": csr.decode()}).encode(), timeout=30,
                 metadata=[("authorization", f"Bearer {token}")])
        )  # fmt: skip
    issued = WorkloadCredentials.from_pem(
        private_key_pem(key), answer["certChain"].encode(), answer["trustBundle"].encode()
    )
    issued.write_files(directory)
    return directory


def mtls_client(directory: Path) -> httpx.Client:
    """httpx presenting the certificate in ``directory``, verifying the server against the
    mesh's bundle (by SPIFFE id, so no host name check)."""
    context = ssl.create_default_context(cafile=str(directory / BUNDLE_FILE))
    context.check_hostname = False
    context.load_cert_chain(directory / "cert-chain.pem", directory / "key.pem")
    return httpx.Client(verify=context, timeout=30)


def metrics_of(mesh: Mesh, replica: str) -> str:
    """A sidecar's metrics, or a library app's."""
    found = mesh.replica(replica)
    if found.get("stats_port"):
        url = f"http://127.0.0.1:{found['stats_port']}/stats/prometheus"
    else:
        url = f"http://127.0.0.1:{found['metrics_port']}/metrics"
    return httpx.get(url, timeout=30).text


def requests_total(exposition: str) -> dict[frozenset[tuple[str, str]], float]:
    found = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "tulle_requests_total":
                found[frozenset(sample.labels.items())] = sample.value
    return found


def served(exposition: str, **wanted: str) -> float:
    """The requests a workload served whose labels include ``wanted``."""
    return sum(
        value
        for labels, value in requests_total(exposition).items()
        if ("reporter", "destination") in labels and set(wanted.items()) <= labels
    )


def test_a_forged_source_workload_header_over_mtls_loses_to_the_certificate(
    mesh: Mesh, tmp_path: Path
) -> None:
    payment = mesh.replica("payment-0")["address"]
    # The intruder's certificate, and a header claiming to be the frontend: refused by the
    # policy that admits only the frontend's principal, and counted as the intruder.
    with mtls_client(certificate_of(mesh, "intruder-0", tmp_path / "intruder")) as client:
        for _ in range(3):
            reply = client.get(f"https://{payment}/pay",
                               headers={"x-tulle-source-workload": "frontend"})  # fmt: skip
            assert reply.status_code == 403, reply.text
            assert reply.text == "denied: no ALLOW policy matches (default/payment-callers)\n"
    # The frontend's certificate, and a header claiming to be the intruder: admitted, counted
    # as the frontend, and the app sees who called from the handshake, not the header.
    with mtls_client(certificate_of(mesh, "frontend-0", tmp_path / "frontend")) as client:
        reply = client.get(f"https://{payment}/pay",
                           headers={"x-tulle-source-workload": "intruder"})  # fmt: skip
    assert reply.status_code == 200, reply.text
    seen = reply.json()["headers"]
    assert "x-tulle-source-workload" not in seen
    assert seen["x-forwarded-client-cert"] == f"By={PAYMENT};URI={FRONTEND}"

    def counted() -> bool:
        text = metrics_of(mesh, "payment-0")
        return served(text, response_code="403") >= 3 and served(text, response_code="200") >= 1

    wait_until(counted, timeout=30)
    text = metrics_of(mesh, "payment-0")
    common = {"connection_security_policy": "mutual_tls", "destination_principal": PAYMENT,
              "destination_workload": "payment"}  # fmt: skip
    assert served(text, source_workload="intruder", source_principal=INTRUDER,
                  response_code="403", **common) == 3  # fmt: skip
    assert served(text, source_workload="frontend", source_principal=FRONTEND,
                  response_code="200", **common) >= 1  # fmt: skip
    assert served(text, source_workload="frontend", response_code="403") == 0
    assert served(text, source_workload="intruder", response_code="200") == 0


def test_sidecar_to_sidecar_calls_carry_both_principals_and_the_access_log_has_the_peer(
    mesh: Mesh,
) -> None:
    url = urllib.parse.quote("http://payment:8080/pay?from=frontend", safe="")
    reply = httpx.get(f"http://{mesh.replica('frontend-0')['address']}/call?url={url}",
                      timeout=30)  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == 200, reply.text

    def sent() -> float:
        return sum(
            value
            for labels, value in requests_total(metrics_of(mesh, "frontend-0")).items()
            if ("reporter", "source") in labels and ("destination_workload", "payment") in labels
        )

    wait_until(lambda: sent() >= 1, timeout=30)
    caller_side = [
        dict(labels)
        for labels in requests_total(metrics_of(mesh, "frontend-0"))
        if ("reporter", "source") in labels and ("destination_workload", "payment") in labels
    ]
    assert {(s["source_principal"], s["destination_principal"],
             s["connection_security_policy"]) for s in caller_side} == {
        (FRONTEND, PAYMENT, "unknown")
    }  # fmt: skip
    # The callee's access log names the caller it verified; its own outbound entries (none
    # here) would name the upstream's.
    state = str(mesh.state_dir)

    def logged() -> list[dict[str, Any]]:
        out = tulle("logs", "payment/payment-0", "-c", "proxy", "--state-dir", state).stdout
        entries = []
        for line in out.splitlines():
            start = line.find("{")
            if start >= 0 and '"listener"' in line:
                entries.append(json.loads(line[start:]))
        return [e for e in entries if e["path"] == "/pay?from=frontend"]

    wait_until(lambda: logged() != [], timeout=30)
    (entry,) = logged()
    assert entry["peer_principal"] == FRONTEND
    assert entry["status"] == 200


def sent_by(exposition: str, **wanted: str) -> list[dict[str, str]]:
    """The label sets of the requests a workload sent whose labels include ``wanted``."""
    return [
        dict(labels)
        for labels in requests_total(exposition)
        if ("reporter", "source") in labels and set(wanted.items()) <= labels
    ]


def test_a_library_caller_reports_both_principals_and_its_callee_sees_its_certificate(
    mesh: Mesh,
) -> None:
    # The library app calls the frontend (a sidecar) through tulle.client, over mTLS (the
    # library's pool is the sidecar's).
    url = urllib.parse.quote("http://frontend:8080/from-ledger", safe="")
    reply = httpx.get(f"http://{mesh.replica('ledger-0')['address']}/call?url={url}",
                      timeout=30)  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["status"] == 200, reply.text

    def reported() -> bool:
        return bool(sent_by(metrics_of(mesh, "ledger-0"), destination_workload="frontend")) and (
            served(metrics_of(mesh, "frontend-0"), source_workload="ledger") >= 1
        )

    wait_until(reported, timeout=30)
    sent = sent_by(metrics_of(mesh, "ledger-0"), destination_workload="frontend")
    assert {
        (s["source_principal"], s["destination_principal"], s["connection_security_policy"])
        for s in sent
    } == {(LEDGER, FRONTEND, "unknown")}
    assert served(metrics_of(mesh, "frontend-0"), source_workload="ledger",
                  source_principal=LEDGER, destination_principal=FRONTEND,
                  connection_security_policy="mutual_tls") >= 1  # fmt: skip


def test_the_certificate_expiry_is_a_gauge_per_workload(mesh: Mesh) -> None:
    api = mesh.status()["api"]
    status = httpx.get(f"{api}/api/v1/proxy-status", headers=mesh.auth, timeout=30).json()
    node = next(n for n in status["nodes"] if "~payment-0." in n["node"])
    gauges = [
        sample
        for family in text_string_to_metric_families(metrics_of(mesh, "payment-0"))
        for sample in family.samples
        if sample.name == "tulle_workload_certificate_expiration_timestamp_seconds"
    ]
    assert [g.labels for g in gauges] == [{"workload": "payment", "principal": PAYMENT}]
    library = [
        sample.labels
        for family in text_string_to_metric_families(metrics_of(mesh, "ledger-0"))
        for sample in family.samples
        if sample.name == "tulle_workload_certificate_expiration_timestamp_seconds"
    ]
    assert library == [{"workload": "ledger", "principal": LEDGER}]
    # The sidecar's certificate is the one the CA last issued to its node, unless it has
    # already renewed (then it is newer): never older.
    from datetime import datetime

    issued = datetime.fromisoformat(node["certificate"]["notAfter"]).timestamp()
    assert gauges[0].value >= issued - 1


def test_tulle_check_warns_of_plain_text_callers_of_strict_and_unknown_principals(
    mesh: Mesh,
) -> None:
    with pytest.raises(httpx.HTTPError):  # a caller outside the mesh: refused by STRICT
        httpx.get(f"http://{mesh.replica('payment-0')['address']}/pay", timeout=30)
    wait_until(lambda: 'reason="plain_text"' in metrics_of(mesh, "payment-0"), timeout=30)
    api = mesh.status()["api"]
    done = tulle("check", "--server", api, "--token", mesh.token,
                 "--state-dir", str(mesh.state_dir), check=False)  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert any(
        line.startswith("warning [mtls]: workload payment is STRICT and refused ")
        and "plain-text connections" in line
        for line in lines
    ), lines
    assert (
        "warning [policy]: AuthorizationPolicy default/auditors (rule 1 from.source.principals) "
        "names principal 'cluster.local/ns/default/sa/auditor', which no workload has"
    ) in lines
    assert not any("[root]" in line or "[certificate]" in line for line in lines), lines
