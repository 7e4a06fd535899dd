"""``tulle up --pods``: each replica in its own network namespace on a bridge (198.18.0.0/15),
its sidecar beside it and its traffic redirected by iptables rules an init step installed; apps
call each other by name with no proxy variable. Afterwards no namespace, veth, bridge, hosts file
or process of the mesh is left — also after ``tulle up`` is killed. Needs root."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.local.conftest import (
    Mesh,
    assert_nothing_left,
    foreground,
    mesh_processes,
    network_leftovers,
    start_mesh,
    tulle,
)

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.xdist_group("host-network"),  # never beside another (tests/conftest.py)
]


@pytest.fixture
def pods_state(tmp_path: Path) -> Iterator[Path]:
    assert network_leftovers() == []
    path = tmp_path / "state"
    yield path
    tulle("down", "--force", "--state-dir", str(path), check=False)
    assert_nothing_left(path)
    assert network_leftovers() == []


def test_the_shop_runs_as_pods_and_calls_by_name(pods_state):
    mesh = Mesh(pods_state)
    start_mesh(pods_state, "examples/shop/", pods=True)
    replicas = {r["replica"]: r for r in mesh.status()["replicas"]}
    assert all(r["ready"] for r in replicas.values())
    assert replicas["frontend-0"]["address"].startswith("198.18.")
    assert replicas["auth-0"]["address"].endswith(":50051")  # each pod has its own ports
    # No proxy variable: the frontend reaches every service by name through the redirect rules.
    frontend = replicas["frontend-0"]
    environ = Path(f"/proc/{frontend['app_pid']}/environ").read_bytes().split(b"\0")
    assert not [v for v in environ if v.upper().startswith(b"HTTP_PROXY=")]
    page = httpx.get(f"http://{frontend['address']}/", timeout=30).json()
    assert page["auth"] == {"status": 200}  # gRPC by name, redirected to the sidecar
    assert page["catalog"]["status"] == 200
    assert page["cart"]["status"] == 200  # the library-mode pod, reached on its pod address
    assert page["cart"]["answer"]["catalog"] in ("v1", "v2")
    namespace = next(n for n in network_leftovers() if n.endswith("-frontend-0"))
    rules = subprocess.run(["ip", "netns", "exec", namespace, "iptables", "-t", "nat", "-S"],
                           capture_output=True, text=True, check=False).stdout  # fmt: skip
    assert "-A TULLE_OUTPUT -p tcp -j REDIRECT --to-ports 15001" in rules
    assert "-A TULLE_INBOUND -p tcp -j REDIRECT --to-ports 15006" in rules
    # From outside the pod the sidecar's read-only stats listener answers on the pod address;
    # its admin listener (drain, quit, config dump) is not there at all.
    ip = frontend["ip"]
    assert httpx.get(f"http://{ip}:{frontend['stats_port']}/ready", timeout=10).text == "LIVE\n"
    metrics = httpx.get(f"http://{ip}:{frontend['stats_port']}/stats/prometheus", timeout=10)
    assert 'reporter="source"' in metrics.text
    assert httpx.post(f"http://{ip}:{frontend['stats_port']}/drain", timeout=10).status_code == 405
    assert (
        httpx.get(f"http://{ip}:{frontend['stats_port']}/config_dump", timeout=10).status_code
        == 404
    )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{ip}:{frontend['admin_port']}/config_dump", timeout=10)
    # Inside the pod, on loopback: reading is open, quitting needs the token in the state dir.
    token_file = Path(frontend["admin_token_file"])
    assert token_file.parent == pods_state / "run"
    assert token_file.stat().st_mode & 0o777 == 0o600

    def in_pod(*curl: str) -> str:
        return subprocess.run(["ip", "netns", "exec", namespace, "curl", "-s", "-w", " %{http_code}", *curl],
                              capture_output=True, text=True, check=False).stdout  # fmt: skip

    admin = f"http://127.0.0.1:{frontend['admin_port']}"
    assert in_pod(f"{admin}/ready") == "LIVE\n 200"
    assert in_pod("-X", "POST", f"{admin}/quitquitquit").endswith(" 401")
    assert mesh.replica("frontend-0")["proxy_pid"] == frontend["proxy_pid"]  # still running
    assert_strict_holds_in_pods(replicas["payment-0"], frontend)
    mesh.down()
    assert network_leftovers() == []


def plain_text_refusals(replica: dict[str, Any]) -> float:
    """Plain-text connections ``replica``'s sidecar refused (its stats on the pod address)."""
    url = f"http://{replica['ip']}:{replica['stats_port']}/stats/prometheus"
    for line in httpx.get(url, timeout=30).text.splitlines():
        if line.startswith('tulle_inbound_tls_refused_total{reason="plain_text"}'):
            return float(line.split()[-1])
    return 0.0


def assert_strict_holds_in_pods(payment: dict[str, Any], frontend: dict[str, Any]) -> None:
    """Payment is STRICT (examples/shop/security.yaml). In a pod its app's port is reachable
    only through the pod's redirect to its sidecar: this process, outside the mesh, dialling
    the pod's address and the app's port is refused as plain text (counted by the sidecar);
    the frontend, in the mesh, pays over mTLS (its principal is the one admitted)."""
    before = plain_text_refusals(payment)
    with pytest.raises(httpx.HTTPError):
        httpx.post(f"http://{payment['address']}/pay", content=b"{}", timeout=30)
    wait_until(lambda: plain_text_refusals(payment) > before, timeout=30)

    def paid() -> bool:  # payment's own chaos fails some calls: one success is the proof
        page = httpx.get(f"http://{frontend['address']}/", timeout=60).json()
        assert page["payment"]["status"] in (200, 503), page["payment"]
        return bool(page["payment"]["status"] == 200)

    wait_until(paid, timeout=120, interval=0.2)


def test_a_killed_tulle_up_leaves_processes_dead_and_down_force_removes_the_network(
    pods_state, tmp_path
):
    config = tmp_path / "mesh.yaml"
    config.write_text(
        """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: echo}
spec:
  command: [python3, tests/e2e/http_backend.py, --name, echo, --host, 0.0.0.0, --port, $(PORT)]
  ports: [{name: http, port: 8080}]
"""
    )
    with foreground("--pods", "-f", str(config), "--state-dir", str(pods_state),
                    "--api-port", "0", "--xds-port", "0") as proc:  # fmt: skip
        answer = httpx.get(f"http://{Mesh(pods_state).address('echo')}/x", timeout=10).json()
        assert answer["name"] == "echo"
        assert len(mesh_processes(pods_state)) == 3  # control plane, sidecar, app
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert_nothing_left(pods_state)  # the kernel ended every child
    assert network_leftovers() != []  # what only a clean stop removes
    assert list((pods_state / "run").iterdir()) != []  # the killed sidecar's admin token
    forced = tulle("down", "--force", "--state-dir", str(pods_state))
    assert "cleared the state" in forced.stdout
    assert network_leftovers() == []
    assert list((pods_state / "run").iterdir()) == []
