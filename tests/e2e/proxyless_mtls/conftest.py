"""The proxyless mesh (one for the package: a control plane serving only its secure xDS port,
the greeter server under its agent), and the processes each test starts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import (
    _stop,
    start_control_plane,
)
from tests.e2e.proxyless_mtls.proxyless import (
    CONFIG,
    PEER,
    Mesh,
    free_port,
)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[str]]]:
    """The processes (client agents) a test starts, stopped when it ends."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in reversed(procs):
        _stop(proc)


@pytest.fixture(scope="package")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    base = tmp_path_factory.mktemp("proxyless")
    port = free_port()
    (base / "config").mkdir()
    (base / "config" / "mesh.yaml").write_text(CONFIG.format(port=port))
    plane = start_control_plane(base / "state", base / "config", insecure_xds=False)
    mesh = Mesh(plane, port, base / "state" / "root-cert.pem", base / "greeter-certs")
    try:
        plane.register(
            service="greeter", address="127.0.0.1", port=port, servicePort=port,
            protocol="GRPC", serviceAccount="greeter",
            labels={"security.istio.io/tlsMode": "istio"},
        )  # fmt: skip
        child = (sys.executable, PEER, "xds-server", str(port))
        mesh.agent(mesh.started, mesh.server_certs, "greeter-0", "greeter", *child)
        assert mesh.started[0].stdout is not None
        assert mesh.started[0].stdout.readline() == f"READY {port}\n"  # the child, under the agent
        yield mesh
    finally:
        for proc in reversed(mesh.started):
            _stop(proc)
        _stop(plane.proc)
