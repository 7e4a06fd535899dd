"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. The inbound side: authorization and rate limit before the
app, opaque TCP ports (not parsed; SIGTERM lets an open connection run on)."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.e2e.conftest import (
    free_port,
    synced,
    wait_until,
)
from tests.manifests import WEB_DENYING_ADMIN


def test_inbound_authorization_and_rate_limit(control_plane, processes):
    app_port = processes.http_backend("web")
    control_plane.apply(
        WEB_DENYING_ADMIN
        + """\
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: web-in}
spec:
  selector: {matchLabels: {app: web}}
  limit: {requests: 1, unit: minute, burst: 3}
"""
    )
    inbound = free_port()
    sidecar = processes.sidecar(
        control_plane, "web-0", None, "--inbound-port", str(inbound), "--app-port", str(app_port)
    )
    wait_until(lambda: synced(control_plane, sidecar.node))
    with httpx.Client(base_url=f"http://127.0.0.1:{inbound}", timeout=10) as client:
        admin = client.get("/admin/users", headers={"host": "web:8080"})
        assert admin.status_code == 403
        assert admin.headers["x-tulle-error"] == "denied by policy default/deny-admin"
        allowed = [client.get("/ok", headers={"host": "web:8080"}) for _ in range(4)]
    assert [r.status_code for r in allowed] == [200, 200, 200, 429]
    assert allowed[0].json()["path"] == "/ok"
    assert allowed[3].headers["x-tulle-error"] == "rate limited by inbound_8080_ratelimit"


def _tcp_service(control_plane, processes, *options: str):
    """A server-speaks-first TCP app (``HELLO db``, then each line back in capitals) behind a
    sidecar's inbound listener; the sidecar and the listener's port."""
    banner = subprocess.Popen(
        [sys.executable, str(Path(__file__).parent / "tcp_banner.py"), "--name", "db"],
        stdout=subprocess.PIPE,
        text=True,
    )
    processes.started.append(banner)
    assert banner.stdout is not None
    app_port = int(banner.stdout.readline().split()[1])
    control_plane.apply(
        """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: db}
spec:
  command: [db]
  ports: [{name: sql, port: 5432, protocol: TCP}]
"""
    )
    inbound = free_port()
    sidecar = processes.sidecar(
        control_plane, "db-0", None, "--inbound-port", str(inbound), "--app-port", str(app_port),
        *options,
    )  # fmt: skip
    wait_until(lambda: synced(control_plane, sidecar.node))
    return sidecar, inbound


def test_inbound_tcp_ports_are_not_parsed(control_plane, processes, tmp_path):
    _, inbound = _tcp_service(control_plane, processes)
    with socket.create_connection(("127.0.0.1", inbound), timeout=10) as conn:
        stream = conn.makefile("rwb")
        assert stream.readline() == b"HELLO db\n"  # the server speaks first, through the sidecar
        stream.write(b"select 1\n")
        stream.flush()
        assert stream.readline() == b"SELECT 1\n"


def test_sigterm_lets_an_open_tcp_connection_run_on_until_it_closes(control_plane, processes):
    sidecar, inbound = _tcp_service(control_plane, processes, "--drain-seconds", "60")
    with socket.create_connection(("127.0.0.1", inbound), timeout=10) as conn:
        stream = conn.makefile("rwb")
        assert stream.readline() == b"HELLO db\n"
        sidecar.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: sidecar.admin("/ready").status_code == 503)  # draining now
        # The drain has begun: the pipe is not cut.
        stream.write(b"select 2\n")
        stream.flush()
        assert stream.readline() == b"SELECT 2\n"
        assert sidecar.proc.poll() is None
        stream.close()  # (the socket stays open while its file object is)
    # The connection closed: the proxy exits now, long before its 60 s grace period ends.
    assert sidecar.proc.wait(20) == 0
