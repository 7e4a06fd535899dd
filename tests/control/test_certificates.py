"""The mesh CA as workloads meet it (issue 17 §1), against a real control plane in this process
and grpcio as the caller: the secure xDS port is TLS that verifies with the published trust
bundle; a CSR with a bootstrap token gets a certificate naming the token's identity (never the
CSR's), for the Mesh's lifetime; no token, a wrong one, a CSR for another identity, or the
plain-text port are refused with the reason and counted; the root survives a restart; the
user's own CA (an intermediate) signs instead when given."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from prometheus_client.parser import text_string_to_metric_families

from tests.security.helpers import write_user_ca
from tulle.control.app import ControlPlane
from tulle.control.certificates import PATH
from tulle.control.serving import PluginCa
from tulle.security.chain import verify_chain
from tulle.security.keys import make_csr, new_private_key
from tulle.security.spiffe import SpiffeId
from tulle.security.tokens import BootstrapTokens, read_token_file

pytestmark = pytest.mark.timeout(120)

MESH = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: tulle-system}
spec: {trustDomain: example.org, workloadCertificateLifetime: 20s}
"""

FRONTEND = SpiffeId("example.org", "default", "frontend")
_PEM = serialization.Encoding.PEM
_DER = serialization.Encoding.DER


async def sign(
    plane: ControlPlane, csr: bytes, token: str | None, secure: bool = True
) -> dict[str, Any]:
    """One Sign call, as a workload makes it; the answer's JSON."""
    bundle = (plane.state_dir / "root-cert.pem").read_bytes()
    if secure:
        channel = grpc.aio.secure_channel(
            f"127.0.0.1:{plane.secure_xds_port}", grpc.ssl_channel_credentials(bundle)
        )
    else:
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{plane.xds_port}")
    async with channel:
        metadata = (("authorization", f"Bearer {token}"),) if token else ()
        answer = await channel.unary_unary(PATH)(
            json.dumps({"csr": csr.decode()}).encode(), metadata=metadata, timeout=30
        )
    data: dict[str, Any] = json.loads(answer)
    return data


def run(
    tmp_path: Path,
    scenario: Callable[[ControlPlane, str], Awaitable[None]],
    plugin: PluginCa | None = None,
) -> None:
    """``scenario(plane, frontend's token)`` against a control plane with MESH."""
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "mesh.yaml").write_text(MESH)
    state = tmp_path / "state"
    token = read_token_file(BootstrapTokens(state).issue("default", "frontend", "frontend-0"))

    async def main() -> None:
        plane = ControlPlane([tmp_path / "config"], state, "127.0.0.1", 0, 0, 0, plugin_ca=plugin)
        await plane.start()
        try:
            await scenario(plane, token)
        finally:
            await plane.stop(0)

    asyncio.run(main())


def leaf_of(answer: dict[str, Any]) -> x509.Certificate:
    return x509.load_pem_x509_certificates(answer["certChain"].encode())[0]


def test_a_workload_gets_a_certificate_of_its_proven_identity(tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane, token: str) -> None:
        key = new_private_key()
        answer = await sign(plane, make_csr(key, FRONTEND), token)
        assert answer["identity"] == "spiffe://example.org/ns/default/sa/frontend"
        chain = x509.load_pem_x509_certificates(answer["certChain"].encode())
        roots = x509.load_pem_x509_certificates(answer["trustBundle"].encode())
        assert answer["trustBundle"].encode() == (plane.state_dir / "root-cert.pem").read_bytes()
        verified = verify_chain(
            [c.public_bytes(encoding=_DER) for c in chain], roots, dt.datetime.now(dt.UTC)
        )
        assert verified == FRONTEND
        leaf = chain[0]
        assert leaf.public_key() == key.public_key()  # the workload's own key, never sent
        lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
        # 20 s from the Mesh, plus the minute the CA backdates for clock skew
        assert lifetime == dt.timedelta(seconds=20) + dt.timedelta(minutes=1)
        # A CSR that names no identity gets the caller's too.
        bare = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
        other_key = new_private_key()
        csr = bare.sign(other_key, hashes.SHA256()).public_bytes(_PEM)
        assert (await sign(plane, csr, token))["identity"] == FRONTEND.uri

    run(tmp_path, scenario)


def test_refusals_say_why_and_are_counted(tmp_path: Path) -> None:
    async def scenario(plane: ControlPlane, token: str) -> None:
        key = new_private_key()

        async def refused(csr: bytes, credential: str | None, secure: bool = True) -> str:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await sign(plane, csr, credential, secure)
            return f"{caught.value.code().name}: {caught.value.details()}"

        own = make_csr(key, FRONTEND)
        payment = make_csr(key, SpiffeId("example.org", "default", "payment"))
        assert await refused(own, None) == (
            "UNAUTHENTICATED: no credential: send 'authorization: Bearer <bootstrap token>' "
            "with the CSR"
        )
        assert await refused(own, "forged") == (
            "UNAUTHENTICATED: credential refused: unknown or revoked bootstrap token"
        )
        assert await refused(payment, token) == (
            "PERMISSION_DENIED: CSR refused: CSR asks for "
            "spiffe://example.org/ns/default/sa/payment but the caller is "
            "spiffe://example.org/ns/default/sa/frontend"
        )
        assert (await refused(b"not a CSR", token)).startswith("INVALID_ARGUMENT: CSR refused:")
        assert await refused(own, token, secure=False) == (
            "FAILED_PRECONDITION: certificates are signed only over TLS: call the secure xDS port"
        )
        await sign(plane, own, token)
        async with httpx.AsyncClient() as client:
            metrics = (await client.get(f"http://127.0.0.1:{plane.http_port}/metrics")).text
        for result, count in (
            ("unauthenticated", 2), ("wrong_identity", 1), ("bad_csr", 1), ("plain_text", 1),
            ("issued", 1),
        ):  # fmt: skip
            assert f'tulle_ca_csr_total{{result="{result}"}} {count}.0' in metrics, result
        # The root's expiry, for `tulle check` and alerts.
        assert plane.ca is not None
        (root,) = plane.ca.roots
        expiry = {
            (sample.labels["serial"], sample.labels["subject"]): sample.value
            for family in text_string_to_metric_families(metrics)
            if family.name == "tulle_ca_root_expiration_timestamp_seconds"
            for sample in family.samples
        }
        root_key = (f"{root.serial_number:x}", root.subject.rfc4514_string())
        assert expiry == {root_key: root.not_valid_after_utc.timestamp()}

    run(tmp_path, scenario)


def test_the_root_is_kept_across_restarts(tmp_path: Path) -> None:
    roots: list[bytes] = []

    async def scenario(plane: ControlPlane, token: str) -> None:
        answer = await sign(plane, make_csr(new_private_key(), FRONTEND), token)
        roots.append(answer["trustBundle"].encode())

    run(tmp_path, scenario)
    run(tmp_path, scenario)
    assert roots[0] == roots[1]
    key_files = list((tmp_path / "state" / "ca").rglob("key.pem"))
    assert key_files
    assert all(path.stat().st_mode & 0o777 == 0o600 for path in key_files)


def test_the_users_own_intermediate_signs_when_given(tmp_path: Path) -> None:
    """Istio's plug-in CA: a root the user keeps, an intermediate given to the control plane;
    leaves chain to the user's root, and the bundle is that root."""
    (tmp_path / "plugin").mkdir()
    cert, key, chain_file, root = write_user_ca(tmp_path / "plugin")
    intermediate = x509.load_pem_x509_certificate(cert.read_bytes())
    plugin = PluginCa(cert, key, chain_file)

    async def scenario(plane: ControlPlane, token: str) -> None:
        answer = await sign(plane, make_csr(new_private_key(), FRONTEND), token)
        assert answer["trustBundle"].encode() == root.public_bytes(_PEM)
        chain = x509.load_pem_x509_certificates(answer["certChain"].encode())
        assert [c.subject for c in chain[1:]] == [intermediate.subject]
        verified = verify_chain(
            [c.public_bytes(encoding=_DER) for c in chain], [root], dt.datetime.now(dt.UTC)
        )
        assert verified == FRONTEND

    run(tmp_path, scenario, plugin)


def test_the_cli_takes_the_users_ca(tmp_path: Path) -> None:
    """``tulle controlplane --ca-cert --ca-key --ca-chain``: the control plane starts with the
    user's intermediate, and publishes the user's root as the trust bundle."""
    cert, key, chain_file, root = write_user_ca(tmp_path)
    state = tmp_path / "state"
    log = tmp_path / "controlplane.log"
    with log.open("w") as errors, subprocess.Popen(
        [sys.executable, "-m", "tulle", "controlplane", "--state-dir", str(state),
         "--xds-port", "0", "--secure-xds-port", "0", "--http-port", "0",
         "--ca-cert", str(cert), "--ca-key", str(key), "--ca-chain", str(chain_file)],
        stdout=subprocess.PIPE, stderr=errors, text=True,
    ) as plane:  # fmt: skip
        try:
            assert plane.stdout is not None
            started = plane.stdout.readline()  # its first line says where it listens
            assert "tulle controlplane" in started, (started, log.read_text())
            assert (state / "root-cert.pem").read_bytes() == root.public_bytes(_PEM)
        finally:
            plane.terminate()
            plane.wait(timeout=30)
