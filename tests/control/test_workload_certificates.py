"""A workload's side of the CA, as the sidecar and the library run it: Tulle's own gRPC client
(no grpcio) calls the control plane's secure port over TLS verified with the published bundle,
and :class:`CertificateKeeper` renews before expiry (at about half of a 4 s lifetime here), keeps
serving its certificate while the CA is away, fails closed with the reason once it has expired,
and recovers when the CA is back."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tulle.control.app import ControlPlane
from tulle.control.certificates import PATH
from tulle.security.renewal import CertificateKeeper
from tulle.security.rotation import RetrySchedule
from tulle.security.tokens import BootstrapTokens, read_token_file
from tulle.xds.grpc_stream import GrpcStreamError, unary_call

pytestmark = pytest.mark.timeout(120)

MESH = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: tulle-system}
spec: {workloadCertificateLifetime: 4s}
"""


def ca_transport(plane: ControlPlane, token: str) -> Callable[[bytes], Awaitable[bytes]]:
    """The ``sign`` callable a workload hands its keeper."""
    context = ssl.create_default_context(cafile=str(plane.state_dir / "root-cert.pem"))

    async def sign(request: bytes) -> bytes:
        address = f"127.0.0.1:{plane.secure_xds_port}"
        return await unary_call(
            address, PATH, request, context, [("authorization", f"Bearer {token}")]
        )

    return sign


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``condition()`` (polled on the loop; timing is never asserted)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def test_a_workload_renews_fails_closed_after_expiry_and_recovers(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(MESH)
    state = tmp_path / "state"
    token = read_token_file(BootstrapTokens(state).issue("default", "frontend", "frontend-0"))

    async def main() -> None:
        plane = ControlPlane([tmp_path / "config"], state, "127.0.0.1", 0, 0, 0)
        await plane.start()
        port = plane.secure_xds_port
        retry = RetrySchedule(first=timedelta(seconds=0.2), cap=timedelta(seconds=0.5))
        keeper = CertificateKeeper(ca_transport(plane, token), retry=retry)
        seen: list[int] = []
        keeper.on_update(lambda credentials: seen.append(credentials.serial))
        assert keeper.problem() == "no valid workload certificate (none issued yet)"
        task = asyncio.create_task(keeper.run())
        try:
            await until(lambda: keeper.renewals >= 2)
            assert keeper.current is not None
            assert keeper.current.identity.uri == "spiffe://cluster.local/ns/default/sa/frontend"
            assert len(set(seen)) == len(seen) >= 3  # a new certificate (and key) each time
            assert keeper.problem() is None
            # The CA goes away: the certificate serves until it expires, then fails closed.
            await plane.stop(0)
            await until(lambda: keeper.problem() is not None)
            problem = keeper.problem()
            assert problem is not None
            assert problem.startswith("no valid workload certificate (expired ")
            assert "the CA: UNAVAILABLE: connect" in problem
            # The CA is back (same port, same state): the workload recovers by itself.
            plane = ControlPlane([tmp_path / "config"], state, "127.0.0.1", 0, 0, port)
            await plane.start()
            await until(lambda: keeper.problem() is None)
        finally:
            task.cancel()
            await plane.stop(0)

    asyncio.run(main())


def test_the_ca_refusal_reaches_the_workload_with_its_reason(tmp_path: Path) -> None:
    async def main() -> None:
        plane = ControlPlane([], tmp_path / "state", "127.0.0.1", 0, 0, 0)
        await plane.start()
        try:
            keeper = CertificateKeeper(ca_transport(plane, "stolen"))
            with pytest.raises(GrpcStreamError) as refused:
                await keeper.renew_once()
            assert str(refused.value) == (
                "UNAUTHENTICATED: credential refused: unknown or revoked bootstrap token"
            )
            # A client that does not trust the control plane's CA does not talk to it.
            stranger = ssl.create_default_context()
            with pytest.raises(GrpcStreamError) as untrusted:
                await unary_call(f"127.0.0.1:{plane.secure_xds_port}", PATH, b"{}", stranger)
            assert "CERTIFICATE_VERIFY_FAILED" in str(untrusted.value)
        finally:
            await plane.stop(0)

    asyncio.run(main())
