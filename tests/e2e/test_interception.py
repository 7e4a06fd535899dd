"""Transparent interception, as in a Kubernetes pod: the app's TCP is redirected to the sidecar by
iptables rules in its own network namespace (installed by ``tulle iptables``, as an init step
would), the sidecar finds the original destination with SO_ORIGINAL_DST, routes by the mesh's
config, and marks its own connections so they are not redirected again. Namespaces, veths, the
bridge and the rules are the test's own (198.18.0.0/15) and are removed afterwards. Needs root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, HERE, ControlPlane, _stop, start_control_plane, wait_until

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.xdist_group("host-network"),  # never beside another (tests/conftest.py)
]

BRIDGE_IP = "198.18.0.1"
CLIENT_IP = "198.18.0.2"
SERVER_IPS = {"v1": "198.18.0.3", "v2": "198.18.0.4"}


def sh(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result.stdout


@dataclass
class Lab:
    """A bridge in the root namespace and two namespaces on it: ``client`` (app + sidecar) and
    ``server`` (the backends)."""

    tag: str
    client: str
    server: str
    bridge: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    def run_in(self, namespace: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ip", "netns", "exec", namespace, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def spawn(self, namespace: str, *args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        return proc


def _veth(lab: Lab, namespace: str, suffix: str, addresses: list[str]) -> None:
    outside, inside = f"tt{lab.tag}{suffix}o", f"tt{lab.tag}{suffix}i"
    sh("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
    sh("ip", "link", "set", inside, "netns", namespace)
    sh("ip", "link", "set", outside, "master", lab.bridge)
    sh("ip", "link", "set", outside, "up")
    for address in addresses:
        sh("ip", "netns", "exec", namespace, "ip", "addr", "add", f"{address}/24", "dev", inside)
    sh("ip", "netns", "exec", namespace, "ip", "link", "set", inside, "up")
    sh("ip", "netns", "exec", namespace, "ip", "link", "set", "lo", "up")


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = uuid.uuid4().hex[:4]
    made = Lab(tag, f"tt-{tag}-client", f"tt-{tag}-server", f"ttbr{tag}")
    try:
        sh("ip", "link", "add", made.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{BRIDGE_IP}/24", "dev", made.bridge)
        sh("ip", "link", "set", made.bridge, "up")
        for namespace in (made.client, made.server):
            sh("ip", "netns", "add", namespace)
        _veth(made, made.client, "c", [CLIENT_IP])
        _veth(made, made.server, "s", list(SERVER_IPS.values()))
        hosts = Path("/etc/netns") / made.client
        hosts.mkdir(parents=True, exist_ok=True)
        (hosts / "hosts").write_text(f"127.0.0.1 localhost\n{SERVER_IPS['v1']} web\n")
        yield made
    finally:
        for proc in made.procs:
            _stop(proc)
        for suffix in ("c", "s"):  # deleting one end of a veth deletes both
            subprocess.run(
                ["ip", "link", "del", f"tt{tag}{suffix}o"], capture_output=True, check=False
            )
        for namespace in (made.client, made.server):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True, check=False)
        subprocess.run(["ip", "link", "del", made.bridge], capture_output=True, check=False)
        shutil.rmtree(Path("/etc/netns") / made.client, ignore_errors=True)
        left = sh("ip", "-o", "link", "show") + sh("ip", "netns", "list")
        assert f"tt{tag}" not in left, left
        assert f"tt-{tag}" not in left, left


@pytest.fixture
def plane(tmp_path: Path, lab: Lab) -> Iterator[ControlPlane]:
    config = tmp_path / "config"
    config.mkdir()
    started = start_control_plane(tmp_path / "state", config, host=BRIDGE_IP)
    yield started
    _stop(started.proc)


def test_the_apps_traffic_is_intercepted_and_routed(lab: Lab, plane: ControlPlane):
    for version, address in SERVER_IPS.items():
        backend = lab.spawn(lab.server, sys.executable, str(HERE / "http_backend.py"),
                            "--name", version, "--host", address, "--port", "8080")  # fmt: skip
        assert backend.stdout is not None
        assert backend.stdout.readline().startswith("READY")
        plane.register(service="web", address=address, port=8080, labels={"version": version})
    plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - route: [{destination: {host: web, subset: v2}}]
"""
    )
    # The init step: redirect the pod's outbound TCP to the sidecar, except the sidecar's own
    # (marked) connections and its xDS connection.
    init = lab.run_in(lab.client, str(BIN / "tulle"), "iptables", "--no-inbound",
                      "--exclude-outbound-port", str(plane.xds_port))  # fmt: skip
    assert init.returncode == 0, init.stderr
    node = f"sidecar~{CLIENT_IP}~client-0.default~default.svc.cluster.local"
    sidecar = lab.spawn(lab.client, str(BIN / "tulle"), "proxy", "--xds", f"{BRIDGE_IP}:{plane.xds_port}",
                        "--node-id", node, "--outbound-port", "15001", "--admin-port", "15000",
                        "--mark", "0x539")  # fmt: skip
    assert sidecar.stderr is not None
    assert sidecar.stderr.readline().startswith("tulle proxy: admin")
    wait_until(
        lambda: (
            lab.run_in(lab.client, "curl", "-sf", "http://127.0.0.1:15000/ready").returncode == 0
        )
    )

    # The app calls web:8080, which resolves to v1's address; the mesh sends it to v2.
    answers = [
        lab.run_in(lab.client, "curl", "-s", "-D", "-", "http://web:8080/hello") for _ in range(5)
    ]
    for answer in answers:
        assert answer.returncode == 0, answer.stderr
        assert "x-backend: v2" in answer.stdout.lower()
        body = json.loads(answer.stdout.split("\n\n", 1)[1])
        assert (body["name"], body["path"], body["host"]) == ("v2", "/hello", "web:8080")

    # Traffic to something outside the mesh passes through to where the app sent it.
    outside = lab.run_in(lab.client, "curl", "-s", f"http://{BRIDGE_IP}:{plane.http_port}/healthz")
    assert outside.stdout == "ok\n"

    stats = lab.run_in(lab.client, "curl", "-s", "http://127.0.0.1:15000/stats/prometheus").stdout
    assert (
        'destination_service="web.default.svc.cluster.local",destination_workload="unknown",reporter="source",response_code="200"'
        in stats
    )


TALK = """\
import socket, sys
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10) as conn:
    stream = conn.makefile("rwb")
    banner = stream.readline()
    stream.write(b"ping\\n"); stream.flush()
    print(banner.decode().strip(), stream.readline().decode().strip())
"""


def test_tcp_services_and_server_speaks_first_protocols(lab: Lab, plane: ControlPlane):
    banner = lab.spawn(lab.server, sys.executable, str(HERE / "tcp_banner.py"),
                       "--name", "cache-a", "--host", SERVER_IPS["v2"], "--port", "6379")  # fmt: skip
    assert banner.stdout is not None
    assert banner.stdout.readline().startswith("READY")
    plane.register(service="cache", address=SERVER_IPS["v2"], port=6379, protocol="TCP")
    init = lab.run_in(lab.client, str(BIN / "tulle"), "iptables", "--no-inbound",
                      "--exclude-outbound-port", str(plane.xds_port))  # fmt: skip
    assert init.returncode == 0, init.stderr
    node = f"sidecar~{CLIENT_IP}~client-0.default~default.svc.cluster.local"
    lab.spawn(lab.client, str(BIN / "tulle"), "proxy", "--xds", f"{BRIDGE_IP}:{plane.xds_port}",
              "--node-id", node, "--outbound-port", "15001", "--admin-port", "15000", "--mark", "0x539")  # fmt: skip
    wait_until(
        lambda: (
            lab.run_in(lab.client, "curl", "-sf", "http://127.0.0.1:15000/ready").returncode == 0
        )
    )
    # The app dials v1's address on the cache port; the mesh's TCP service on 6379 answers, and
    # its banner (the server speaks first) arrives through the proxy.
    talk = lab.run_in(lab.client, sys.executable, "-c", TALK, SERVER_IPS["v1"], "6379")
    assert talk.returncode == 0, talk.stderr
    assert talk.stdout.strip() == "HELLO cache-a PING"

    def closed() -> str:
        return lab.run_in(
            lab.client, "curl", "-s", "http://127.0.0.1:15000/stats/prometheus"
        ).stdout

    # Plain text (no sidecar at the cache): no principal on either side.
    labels = (
        'connection_security_policy="unknown",destination_principal="unknown",'
        'destination_service="cache.default.svc.cluster.local",destination_workload="unknown",'
        'reporter="source",source_principal="unknown",source_workload="client"'
    )
    try:
        wait_until(lambda: f"tulle_tcp_connections_closed_total{{{labels}}}" in closed())
    except AssertionError:
        raise AssertionError(closed()) from None
    stats = closed()
    assert f"tulle_tcp_connections_opened_total{{{labels}}} 1.0" in stats
    assert f"tulle_tcp_sent_bytes_total{{{labels}}} 5.0" in stats
