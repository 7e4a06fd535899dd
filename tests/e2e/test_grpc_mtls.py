"""Proxyless client mTLS, proven with stock grpcio: the control plane sends a gRPC client one
``transport_socket`` per cluster naming the certificate providers of its bootstrap (gRFC A29);
the client (``grpc.xds_channel_credentials``) then speaks mTLS, with the files the mesh's CA
issued, to a grpcio server that requires client certificates, and checks the server's SPIFFE
id against the service accounts the registry knows for the service. The certificate files are
written here straight from a CA; ``tests/e2e/proxyless_mtls/`` has ``tulle agent`` keep them, the
secure xDS port, and ``xds=True`` servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import HERE, NODE, ControlPlane, Processes, _stop, wait_until
from tulle.security import (
    CertificateAuthority,
    SpiffeId,
    WorkloadCredentials,
    make_csr,
    new_private_key,
    private_key_pem,
)

TARGET = "xds:///greeter.default.svc.cluster.local:50051"
CLIENT = "spiffe://cluster.local/ns/default/sa/client"
IN_MESH = {"security.istio.io/tlsMode": "istio"}
ISTIO_MUTUAL = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy: {tls: {mode: ISTIO_MUTUAL}}
"""


def issue(ca: CertificateAuthority, account: str, directory: Path) -> Path:
    """A workload certificate for service account ``account``, in grpcio's files."""
    key = new_private_key()
    identity = SpiffeId("cluster.local", "default", account)
    issued = ca.issue(make_csr(key, identity), identity)
    credentials = WorkloadCredentials.from_issued(
        private_key_pem(key), issued, ca.trust_bundle_pem()
    )
    credentials.write_files(directory)
    return directory


def bootstrap(plane: ControlPlane, certificates: Path | None) -> str:
    """The client's bootstrap, with the ``default`` file_watcher provider when given files."""
    data = json.loads(plane.bootstrap())
    if certificates is not None:
        data["certificate_providers"] = {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": str(certificates / "cert-chain.pem"),
                    "private_key_file": str(certificates / "key.pem"),
                    "ca_certificate_file": str(certificates / "root-cert.pem"),
                    "refresh_interval": "900s",
                },
            }
        }
    return json.dumps(data)


def start_server(processes: Processes, certificates: Path, name: str) -> int:
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "grpc_mtls_peer.py"), "server", str(certificates),
         "--name", name],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    processes.started.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY "), line
    return int(line.split()[1])


def run_client(config: str, *args: str) -> list[dict[str, Any]]:
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": config, "GRPC_VERBOSITY": "NONE"}
    proc = subprocess.run(
        [sys.executable, str(HERE / "grpc_mtls_peer.py"), "client", TARGET, *args],
        capture_output=True, text=True, env=env, timeout=120, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in proc.stdout.splitlines()]


def register(plane: ControlPlane, port: int, account: str, labels: dict[str, str]) -> None:
    plane.register(
        service="greeter", address="127.0.0.1", port=port, servicePort=50051,
        protocol="GRPC", serviceAccount=account, labels=labels,
    )  # fmt: skip


@pytest.fixture
def ca(tmp_path: Path) -> CertificateAuthority:
    return CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")


def test_a_grpcio_client_speaks_mtls_to_an_endpoint_in_the_mesh(
    control_plane: ControlPlane, processes: Processes, ca: CertificateAuthority, tmp_path: Path
):
    port = start_server(processes, issue(ca, "greeter", tmp_path / "greeter"), "greeter")
    register(control_plane, port, "greeter", IN_MESH)
    results = run_client(bootstrap(control_plane, issue(ca, "client", tmp_path / "client")))
    # The server required a client certificate and saw the client's SPIFFE id.
    assert results == [{"ok": True, "reply": f"greeter|{CLIENT}"}] * 5


def test_a_server_with_another_identity_is_refused(
    control_plane: ControlPlane, processes: Processes, ca: CertificateAuthority, tmp_path: Path
):
    # The endpoint is registered as service account greeter but presents impostor's
    # certificate (from the same CA): grpcio's SAN check refuses it.
    port = start_server(processes, issue(ca, "impostor", tmp_path / "impostor"), "impostor")
    register(control_plane, port, "greeter", IN_MESH)
    results = run_client(bootstrap(control_plane, issue(ca, "client", tmp_path / "client")))
    assert [r["ok"] for r in results] == [False] * 5
    assert {r["code"] for r in results} == {"UNAVAILABLE"}
    assert "SANs from certificate did not match SANs from xDS control plane" in results[0]["detail"]


def test_an_endpoint_outside_the_mesh_gets_plain_text(
    control_plane: ControlPlane, processes: Processes, ca: CertificateAuthority, tmp_path: Path
):
    # No tlsMode label: the cluster has no transport socket and the client's fallback (plain
    # text) applies, even with certificate providers in its bootstrap.
    port = processes.greeter("plain")
    register(control_plane, port, "greeter", {})
    results = run_client(bootstrap(control_plane, issue(ca, "client", tmp_path / "client")))
    assert results == [{"ok": True, "reply": "plain"}] * 5


def test_istio_mutual_without_the_label(
    control_plane: ControlPlane, processes: Processes, ca: CertificateAuthority, tmp_path: Path
):
    # An endpoint that does not say it is in the mesh: a DestinationRule asks for mTLS anyway.
    port = start_server(processes, issue(ca, "greeter", tmp_path / "greeter"), "greeter")
    register(control_plane, port, "greeter", {})
    control_plane.apply(ISTIO_MUTUAL)
    results = run_client(bootstrap(control_plane, issue(ca, "client", tmp_path / "client")))
    assert results == [{"ok": True, "reply": f"greeter|{CLIENT}"}] * 5


def nacked_clusters(plane: ControlPlane) -> str | None:
    for node in plane.proxy_status()["nodes"]:
        state = node["types"].get("clusters")
        if node["node"] == NODE and state and state["nack"]:
            return str(state["nack"])
    return None


def test_without_certificate_providers_grpcio_nacks_the_cluster(
    control_plane: ControlPlane, processes: Processes, ca: CertificateAuthority, tmp_path: Path
):
    port = start_server(processes, issue(ca, "greeter", tmp_path / "greeter"), "greeter")
    register(control_plane, port, "greeter", IN_MESH)
    config = bootstrap(control_plane, None)
    env = {**os.environ, "GRPC_XDS_BOOTSTRAP_CONFIG": config, "GRPC_VERBOSITY": "NONE"}
    client = subprocess.Popen(
        [sys.executable, str(HERE / "grpc_mtls_peer.py"), "client", TARGET,
         "--count", "1000", "--seconds", "30"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    seen: list[str] = []

    def nacked() -> bool:
        message = nacked_clusters(control_plane)
        if message is not None:
            seen.append(message)
        return message is not None

    try:
        wait_until(nacked, timeout=20)
    finally:
        _stop(client)
    # grpcio 1.85's words, in the control plane's proxy status:
    # xDS response validation errors: [resource index 0: outbound|50051||greeter...: INVALID_
    # ARGUMENT: errors validating Cluster resource: [field:transport_socket.typed_config.value[
    # envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext].common_tls_context.tls_
    # certificate_provider_instance.instance_name error:unrecognized certificate provider
    # instance name: default; field:...validation_context.ca_certificate_provider_instance.
    # instance_name error:unrecognized certificate provider instance name: default]]
    assert "unrecognized certificate provider instance name: default" in seen[0], seen[0]
