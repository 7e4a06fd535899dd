"""A ServiceEntry endpoint on a Unix domain socket (Istio's ``unix:///path``, its
``service_entry`` example 10) as a parity scenario: a real HTTP server listens on a Unix socket,
the control plane sends its endpoint as an Envoy pipe address, and a sidecar (httpx through its
HTTP proxy) and the library (``tulle.client`` in this process) each call
``http://example.unix.local/`` and get that server's answer. Proxyless gRPC gets no such
endpoint (grpcio reads socket addresses only): docs/library.md."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

import tulle.client
from tests.e2e.conftest import (
    ControlPlane,
    Processes,
    _stop,
    start_control_plane,
    synced,
    wait_until,
)
from tests.scenarios.conftest import LibraryCaller, SidecarCaller

pytestmark = pytest.mark.timeout(300)

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: unix-domain-socket-example}}
spec:
  hosts: ["example.unix.local"]
  location: MESH_EXTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: "unix://{path}"}}]
"""


class Answer(BaseHTTPRequestHandler):
    """Answers every GET with who it is and the path it got."""

    def do_GET(self) -> None:
        body = f'{{"path": "{self.path}", "headers": {{}}}}'.encode()
        self.send_response(200)
        self.send_header("x-backend", "unix")
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:  # a Unix peer has no address to log
        return

    def address_string(self) -> str:
        return "unix"


class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    base = tmp_path_factory.mktemp("unix")
    path = base / "s.sock"
    assert len(str(path).encode()) <= 107
    server = UnixServer(str(path), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (base / "config").mkdir()
    (base / "config" / "mesh.yaml").write_text(CONFIG.format(path=path))
    control = start_control_plane(base / "state", base / "config")
    try:
        yield control
    finally:
        _stop(control.proc)
        server.shutdown()
        server.server_close()
        Path(path).unlink(missing_ok=True)


@pytest.mark.parametrize("mode", ["sidecar", "library"])
def test_a_unix_socket_endpoint_answers(plane: ControlPlane, mode: str) -> None:
    control, procs = plane, Processes()
    caller = SidecarCaller(control, procs) if mode == "sidecar" else LibraryCaller(control)
    try:
        wait_until(lambda: synced(control, caller.node), timeout=30)
        outcome = caller.get("http://example.unix.local/hello")
        assert (outcome.status, outcome.backend, outcome.path) == (200, "unix", "/hello")
    finally:
        caller.close()
        procs.stop_all()
        if mode == "library":
            tulle.client.shutdown()
