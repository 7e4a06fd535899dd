"""One mesh for the adversarial suites (tests/e2e/test_hostile_*.py): a control plane, a
recording backend serving ``web:8080`` and a sidecar that is both the caller's (HTTP proxy
listener, routes that mark what they route with ``x-routed``) and the backend's (inbound
listener with a DENY policy on ``/admin*``, at most 5 requests in flight to ``web``). Set up
once per module: each attack is one test on its own connection. Also the raw clients the
attacks need: HTTP/1.1 bytes on a socket, and helpers to read answers and process state."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.e2e.conftest import (
    ControlPlane,
    Processes,
    Sidecar,
    _stop,
    free_port,
    start_control_plane,
    synced,
    wait_until,
)
from tests.e2e.recording_backend import RecordingBackend, start_recording_backend
from tests.manifests import WEB_DENYING_ADMIN

MESH = (
    WEB_DENYING_ADMIN
    + """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - route: [{destination: {host: web}}]
      headers: {request: {set: {x-routed: "yes"}}}
      retries: {attempts: 0}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy: {connectionPool: {http: {http2MaxRequests: 5}}}
"""
)


@dataclass
class Hostile:
    """The mesh under attack."""

    plane: ControlPlane
    backend: RecordingBackend
    sidecar: Sidecar
    inbound_port: int

    @property
    def pid(self) -> int:
        return self.sidecar.proc.pid

    def connect(self, inbound: bool = False) -> socket.socket:
        port = self.inbound_port if inbound else self.sidecar.http_proxy_port
        return socket.create_connection(("127.0.0.1", port), timeout=20)


def hostile_mesh() -> Iterator[Hostile]:
    """The mesh, for a module-scoped fixture of the test module (``yield from``)."""
    with tempfile.TemporaryDirectory() as tmp:
        config_dir = Path(tmp) / "config"
        config_dir.mkdir()
        plane = start_control_plane(Path(tmp) / "state", config_dir)
        backend = start_recording_backend()
        processes = Processes()
        try:
            plane.apply(MESH)
            plane.register(service="web", address="127.0.0.1", port=backend.port, servicePort=8080)
            inbound = free_port()
            sidecar = processes.sidecar(
                plane, "web-0", None, "--inbound-port", str(inbound),
                "--app-port", str(backend.port),
            )  # fmt: skip
            wait_until(lambda: synced(plane, sidecar.node))
            yield Hostile(plane, backend, sidecar, inbound)
        finally:
            processes.stop_all()
            _stop(plane.proc)
            backend.stop()


def read_responses(sock: socket.socket, count: int) -> list[tuple[int, dict[str, str], bytes]]:
    """Read ``count`` HTTP/1.1 responses (Content-Length or chunked framed, or ending with
    the connection); fails if the connection ends first."""
    buffer = b""
    found: list[tuple[int, dict[str, str], bytes]] = []

    def fill() -> None:
        nonlocal buffer
        data = sock.recv(65536)
        if not data:
            raise AssertionError(f"connection closed after {len(found)} responses: {buffer!r}")
        buffer += data

    while len(found) < count:
        while b"\r\n\r\n" not in buffer:
            fill()
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status < 200 and status != 101:
            continue
        if "content-length" in headers:
            size = int(headers["content-length"])
            while len(buffer) < size:
                fill()
            body, buffer = buffer[:size], buffer[size:]
        elif headers.get("transfer-encoding") == "chunked":
            body = b""
            while True:
                while b"\r\n" not in buffer:
                    fill()
                size_line, _, buffer = buffer.partition(b"\r\n")
                size = int(size_line.split(b";")[0], 16)
                while len(buffer) < size + 2:
                    fill()
                body, buffer = body + buffer[:size], buffer[size + 2 :]
                if size == 0:
                    break
        else:
            body = b""
        found.append((status, headers, body))
    return found


def closed_by_peer(sock: socket.socket) -> bool:
    """Reads until the peer closes (True) or the socket's timeout passes (False); data read
    meanwhile is dropped."""
    try:
        while sock.recv(65536):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def recv_until(sock: socket.socket, marker: bytes) -> bytes:
    """Reads until ``marker`` has arrived (fails if the connection ends first); all read."""
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    return data


def open_files(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")
