"""A library runtime with an identity shuts down cleanly: its xDS stream and CA calls run over
TLS to the control plane's secure port, and a TLS connection closes only once the peer has
answered its close_notify, so the runtime's thread must let those closes finish before it
closes its event loop (uvloop refuses to close a loop with a connection still open: the
thread died with ``OSError: [Errno 16] Device or resource busy`` and the transports were
reported as fatal errors on a closed loop)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import tulle.client
from tests.e2e.conftest import ControlPlane, _stop, start_control_plane
from tulle.security.tokens import BootstrapTokens

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def plane(tmp_path: Path) -> Iterator[ControlPlane]:
    (tmp_path / "config").mkdir()
    plane = start_control_plane(tmp_path / "state", tmp_path / "config")
    yield plane
    _stop(plane.proc)


def test_a_runtime_with_a_certificate_closes_its_loop_cleanly(
    plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    failures: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", failures.append)
    token = BootstrapTokens(plane.state_dir).issue("default", "frontend", "frontend-0.default")
    for _ in range(2):  # configure() replaces a running runtime: the same close
        runtime = tulle.client.configure(
            xds_address=f"127.0.0.1:{plane.secure_xds_port}",
            node_id="library~127.0.0.1~frontend-0.default~default.svc.cluster.local",
            xds_root_cert=str(plane.state_dir / "root-cert.pem"), token_file=str(token),
            access_log=False,
        )  # fmt: skip
        assert runtime.wait_ready(30)
        assert runtime.certificates is not None
    tulle.client.shutdown()
    assert [(f.thread.name if f.thread else "", repr(f.exc_value)) for f in failures] == []
