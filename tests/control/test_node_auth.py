"""Who may subscribe to xDS as which node (issue 17 §3), with the sidecar's and library's own
xDS client against a real control plane in this process: over TLS with its replica's bootstrap
token a node gets its config; another replica's token, no token, a forged one, or the plain-text
port (without ``--insecure-xds``) are refused with the reason, and nothing is sent to them."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import pytest

from tulle.control.app import ControlPlane
from tulle.security.tokens import BootstrapTokens, read_token_file
from tulle.xds.client import XdsClient
from tulle.xds.grpc_stream import GrpcStreamError

pytestmark = pytest.mark.timeout(120)

NODE = "sidecar~127.0.0.1~frontend-0.default~default.svc.cluster.local"


def accept_all(resources: Any, version: str) -> None:
    """Every config is fine here: what is tested is who gets one."""


def client(plane: ControlPlane, token: str | None, secure: bool = True) -> XdsClient:
    port = plane.secure_xds_port if secure else plane.xds_port
    xds = XdsClient(f"127.0.0.1:{port}", NODE, accept_all)
    if secure:
        xds.tls = ssl.create_default_context(cafile=str(plane.state_dir / "root-cert.pem"))
    if token is not None:
        xds.credential = lambda: token
    return xds


async def refusal(xds: XdsClient) -> str:
    """The error the stream ends with (it must end: a refused node gets nothing)."""
    with pytest.raises(GrpcStreamError) as ended:
        await asyncio.wait_for(xds._stream(), 30)
    assert not xds.connected  # not one response was received
    return str(ended.value)


def test_nodes_prove_who_they_are(tmp_path: Path) -> None:
    state = tmp_path / "state"
    tokens = BootstrapTokens(state)
    own = read_token_file(tokens.issue("default", "frontend", "frontend-0.default"))
    other = read_token_file(tokens.issue("default", "payment", "payment-0.default"))

    async def main() -> None:
        plane = ControlPlane([], state, "127.0.0.1", 0, 0, 0)
        await plane.start()
        try:
            xds = client(plane, own)
            task = asyncio.create_task(xds.run())
            await asyncio.wait_for(xds.ready.wait(), 30)
            statuses = [c for c in plane.connections.values() if c.node.id == NODE]
            assert [c.secure for c in statuses] == [True]
            task.cancel()
            assert await refusal(client(plane, other)) == (
                "PERMISSION_DENIED: the token of replica payment-0.default "
                "(ns/default/sa/payment) may not subscribe as node " + NODE
            )
            assert await refusal(client(plane, "forged")) == (
                "PERMISSION_DENIED: credential refused: unknown or revoked bootstrap token"
            )
            assert await refusal(client(plane, None)) == (
                "PERMISSION_DENIED: no credential: send 'authorization: Bearer "
                "<bootstrap token>' with the stream"
            )
            assert await refusal(client(plane, own, secure=False)) == (
                "PERMISSION_DENIED: plain-text xDS is off: connect to the secure xDS port with "
                "a bootstrap token (or start the control plane with --insecure-xds)"
            )
        finally:
            await plane.stop(0)

    asyncio.run(main())


def test_insecure_xds_is_served_only_when_asked(tmp_path: Path) -> None:
    async def main() -> None:
        plane = ControlPlane([], tmp_path / "state", "127.0.0.1", 0, 0, 0, insecure_xds=True)
        await plane.start()
        try:
            xds = client(plane, None, secure=False)
            task = asyncio.create_task(xds.run())
            await asyncio.wait_for(xds.ready.wait(), 30)
            assert [c.secure for c in plane.connections.values()] == [False]
            task.cancel()
        finally:
            await plane.stop(0)

    asyncio.run(main())
