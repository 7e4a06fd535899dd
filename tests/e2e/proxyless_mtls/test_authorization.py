"""Proxyless gRPC under zero trust (the package's docstring says how): an AuthorizationPolicy with
``principals`` admits the client's identity and refuses another's."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    wait_until,
)
from tests.e2e.proxyless_mtls.proxyless import (
    CLIENT,
    ONLY_CLIENT,
    Mesh,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("proxyless-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_principals_admit_the_client_and_refuse_another(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    client = mesh.agent(started, tmp_path / "client", "client-0", "client")
    other = mesh.agent(started, tmp_path / "other", "other-0", "other")
    [before] = mesh.call(other, "--count", "1")
    assert before["reply"].split("|")[:2] == [
        "greeter",
        "spiffe://cluster.local/ns/default/sa/other",
    ]
    mesh.plane.apply(ONLY_CLIENT)
    try:
        # grpcio's RBAC filter (gRFC A41) matches the principal against the caller's URI SAN.
        wait_until(lambda: not mesh.call(other, "--count", "1", "--fresh")[0]["ok"], timeout=60)
        denied = mesh.call(other, "--count", "3", "--fresh")
        assert (
            denied
            == [{"ok": False, "code": "PERMISSION_DENIED", "detail": "Unauthorized RPC rejected"}]
            * 3
        )
        allowed = mesh.call(client, "--count", "3", "--fresh")
        assert [r["ok"] for r in allowed] == [True] * 3
        assert {r["reply"].split("|")[1] for r in allowed} == {CLIENT}
    finally:
        mesh.delete("AuthorizationPolicy", "greeter-callers")
    wait_until(lambda: mesh.call(other, "--count", "1", "--fresh")[0]["ok"], timeout=60)
