"""Proxyless gRPC under zero trust (the package's docstring says how): the server is STRICT (a plain-text
client is refused), and a namespace DISABLE makes it plain text."""

from __future__ import annotations

import subprocess
from pathlib import Path

import grpc
import pytest

from tests.e2e.conftest import (
    wait_until,
)
from tests.e2e.proxyless_mtls.proxyless import (
    CLIENT,
    NAMESPACE_DISABLE,
    Mesh,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("proxyless-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_a_plain_text_client_is_refused_by_the_strict_server(mesh: Mesh) -> None:
    with (
        grpc.insecure_channel(f"127.0.0.1:{mesh.port}") as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        channel.unary_unary("/greeter.Greeter/SayHello")(b"hi", timeout=10)
    assert refused.value.code() is grpc.StatusCode.UNAVAILABLE


def test_a_namespace_that_disables_mtls_makes_the_server_plain_text(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    client = mesh.agent(started, tmp_path / "client", "client-0", "client")
    mesh.plane.apply(NAMESPACE_DISABLE)
    try:
        wait_until(lambda: mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "DISABLE"})
        # The client's cluster has no transport socket any more (auto mTLS follows the
        # namespace): plain text, so the server sees no caller.
        wait_until(
            lambda: (
                mesh.call(client, "--count", "1", "--fresh") == [{"ok": True, "reply": "greeter|"}]
            ),
            timeout=60,
        )
    finally:
        mesh.delete("PeerAuthentication", "plain")
    wait_until(lambda: mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "STRICT"})

    def mutual_again() -> bool:
        [result] = mesh.call(client, "--count", "1", "--fresh")
        return result["ok"] and result["reply"].split("|")[1] == CLIENT

    wait_until(mutual_again, timeout=60)
