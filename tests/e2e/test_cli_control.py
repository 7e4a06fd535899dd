"""The config and status commands against a running control plane, as a user types them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.conftest import (
    Client,
    ControlPlane,
    Processes,
    _stop,
    start_control_plane,
    wait_until,
)
from tests.e2e.test_grpc_xds import LONG, service_entry

TULLE = str(Path(sys.executable).parent / "tulle")


def tulle(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TULLE, *args, "--server", plane.api, "--token", plane.token],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - route:
        - destination: {host: greeter}
      timeout: %s
"""


def test_apply_get_delete(control_plane: ControlPlane, processes: Processes, tmp_path: Path):
    entry = tmp_path / "greeter.yaml"
    entry.write_text(service_entry({"a": processes.greeter("a")}))
    route = tmp_path / "route.yaml"
    route.write_text(ROUTE % "1s")
    applied = tulle(control_plane, "apply", "-f", str(entry), "-f", str(route))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines() == [
        "ServiceEntry default/greeter created",
        "VirtualService default/greeter created",
    ]
    assert (
        tulle(control_plane, "apply", "-f", str(route)).stdout
        == "VirtualService default/greeter unchanged\n"
    )

    route.write_text(ROUTE % "ten seconds")
    refused = tulle(control_plane, "apply", "-f", str(route))
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "error: config rejected; nothing changed",
        f"{route}:9: ERROR VirtualService default/greeter: spec.http[0].timeout: invalid duration"
        " 'ten seconds': write a number and a unit (h, m, s, ms, us, ns), e.g. '1.5s', '100ms',"
        " '1m'",
    ]

    table = tulle(control_plane, "get")
    assert table.returncode == 0
    rows = [line.split() for line in table.stdout.splitlines()]
    assert rows[0] == ["KIND", "NAMESPACE", "NAME", "SOURCE"]
    assert ["VirtualService", "default", "greeter", "applied"] in rows
    as_yaml = tulle(control_plane, "get", "vs", "greeter", "-o", "yaml")
    (resource,) = yaml.safe_load_all(as_yaml.stdout)
    assert resource["spec"]["http"][0]["timeout"] == "1s"  # the refused change changed nothing
    as_json = json.loads(tulle(control_plane, "get", "serviceentries", "-o", "json").stdout)
    assert [r["metadata"]["name"] for r in as_json] == ["greeter"]

    missing = tulle(control_plane, "get", "vs", "nope")
    assert missing.returncode == 1
    assert "no VirtualService default/nope" in missing.stderr
    unknown = tulle(control_plane, "get", "gadgets")
    assert "unknown kind 'gadgets'" in unknown.stderr

    still_needed = tulle(control_plane, "delete", "serviceentry", "greeter")
    assert still_needed.returncode == 1
    assert "is not defined by any Workload, Service or ServiceEntry" in still_needed.stderr
    assert (
        tulle(control_plane, "delete", "vs", "greeter").stdout
        == "VirtualService default/greeter deleted\n"
    )
    assert tulle(control_plane, "delete", "serviceentry", "greeter").returncode == 0


def test_watched_files(control_plane: ControlPlane, processes: Processes):
    (control_plane.config_dir / "greeter.yaml").write_text(
        service_entry({"a": processes.greeter("a")})
    )
    route = control_plane.config_dir / "route.yaml"
    route.write_text(ROUTE % "2s")

    def timeout() -> str | None:
        listed = tulle(control_plane, "get", "vs", "-o", "json")
        items = json.loads(listed.stdout) if listed.returncode == 0 else []
        return items[0]["spec"]["http"][0]["timeout"] if items else None

    wait_until(lambda: timeout() == "2s")
    route.write_text(ROUTE % "2 s")  # a mistake: the last good config stays
    wait_until(lambda: "invalid duration '2 s'" in json.dumps(_config_status(control_plane)))
    assert timeout() == "2s"
    route.write_text(ROUTE % "3s")
    wait_until(lambda: timeout() == "3s")


def _config_status(plane: ControlPlane) -> dict:
    import httpx

    return httpx.get(f"{plane.api}/api/v1/config-status", headers=plane.auth).json()


def test_proxy_status_and_config(control_plane: ControlPlane, processes: Processes, clients):
    control_plane.apply(service_entry({"a": processes.greeter("a")}))
    client = Client(
        control_plane.bootstrap(),
        LONG,
        "--count",
        "100000",
        "--interval",
        "0.01",
        "--seconds",
        "30",
    )
    clients.append(client)
    wait_until(lambda: len(client.results) >= 5)
    status = tulle(control_plane, "proxy-status")
    assert status.returncode == 0
    header, row = status.stdout.splitlines()[:2]
    assert header.split() == [
        "NODE", "MODE", "LISTENERS", "ROUTES", "CLUSTERS", "ENDPOINTS", "CERTIFICATE", "EXPIRES",
        "SERVER", "MTLS",
    ]  # fmt: skip
    cells = row.split()
    assert cells[:2] == [
        "proxyless~127.0.0.1~client-0.default~default.svc.cluster.local",
        "proxyless",
    ]
    assert [cells[i] for i in (2, 4, 6, 8)] == ["SYNCED"] * 4
    assert cells[10] == "-"  # a plain-text proxyless client has no certificate from the CA
    assert cells[11] == "-"  # and, a client, no server Listener
    node = cells[0]
    listeners = json.loads(tulle(control_plane, "proxy-config", node, "--type", "listeners").stdout)
    assert [item["name"] for item in listeners] == ["greeter.default.svc.cluster.local:50051"]
    endpoints = yaml.safe_load(
        tulle(control_plane, "proxy-config", node, "--type", "endpoints", "-o", "yaml").stdout
    )
    assert endpoints[0]["clusterName"] == "outbound|50051||greeter.default.svc.cluster.local"
    unknown = tulle(control_plane, "proxy-config", "nobody")
    assert unknown.returncode == 1
    assert "no connected node 'nobody'" in unknown.stderr


def test_commands_without_a_control_plane_say_so():
    result = subprocess.run(
        [TULLE, "get", "--server", "http://127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 1
    assert "cannot reach the control plane at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_without_the_admin_token_are_refused_and_say_where_it_is(
    control_plane: ControlPlane, tmp_path: Path
):
    for args in (["get"], ["proxy-status"], ["delete", "ServiceEntry", "x"]):
        result = subprocess.run(
            [TULLE, *args, "--server", control_plane.api],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "TULLE_TOKEN"},
        )  # fmt: skip
        assert result.returncode == 1, args
        assert "this API needs a token" in result.stderr
        assert "no admin token found: looked for .tulle/controlplane/admin-token" in result.stderr
    wrong = subprocess.run(
        [TULLE, "get", "--server", control_plane.api, "--token", "not-the-token"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert wrong.returncode == 1
    assert "token refused" in wrong.stderr
    assert "not-the-token" not in wrong.stderr


def test_bootstrap_grpc():
    node = "proxyless~1.2.3.4~c.default~default.svc.cluster.local"
    result = subprocess.run(
        [TULLE, "bootstrap", "grpc", "--xds", "127.0.0.1:15010", "--node-id", node, "--insecure"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == {
        "xds_servers": [
            {
                "server_uri": "127.0.0.1:15010",
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node, "locality": {}},
        "server_listener_resource_name_template": "xds.tulle.dev/grpc/lds/inbound/%s",
    }


def test_bootstrap_grpc_is_secure_by_default(tmp_path: Path):
    certs = tmp_path / "certs"
    result = subprocess.run(
        [TULLE, "bootstrap", "grpc", "--certs", str(certs), "--pod", "client-0",
         "--refresh-interval", "5"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert json.loads(result.stdout) == {
        "xds_servers": [
            {
                "server_uri": "127.0.0.1:15012",
                "channel_creds": [
                    {"type": "tls", "config": {"ca_certificate_file": f"{certs}/root-cert.pem"}}
                ],
                "call_creds": [
                    {"type": "jwt_token_file", "config": {"jwt_token_file": f"{certs}/xds-token"}}
                ],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {
            "id": "proxyless~127.0.0.1~client-0.default~default.svc.cluster.local",
            "locality": {},
        },
        "server_listener_resource_name_template": "xds.tulle.dev/grpc/lds/inbound/%s",
        "certificate_providers": {
            "default": {
                "plugin_name": "file_watcher",
                "config": {
                    "certificate_file": f"{certs}/cert-chain.pem",
                    "private_key_file": f"{certs}/key.pem",
                    "ca_certificate_file": f"{certs}/root-cert.pem",
                    "refresh_interval": "5s",
                },
            }
        },
    }
    # Secure xDS without the agent's directory would carry no token: refused, saying why.
    bare = subprocess.run(
        [TULLE, "bootstrap", "grpc"], capture_output=True, text=True, timeout=30, check=False
    )
    assert bare.returncode == 2
    assert "secure xDS needs --certs" in bare.stderr


def test_sigterm_exits_cleanly_while_data_planes_are_connected(
    tmp_path: Path, processes: Processes
):
    """SIGTERM with ADS streams open: exit code 0 and not a line of traceback (grpcio logged
    "Exception not handled ... CancelledError" for each stream the loop's end cancelled)."""
    (tmp_path / "config").mkdir()
    log = tmp_path / "controlplane.log"
    with open(log, "w") as output:
        plane = start_control_plane(tmp_path / "state", tmp_path / "config", stderr=output)
    try:
        processes.sidecar(plane)  # connected and subscribed: it waits until it is ready
        processes.sidecar(plane, pod="client-1")
        wait_until(lambda: len(plane.proxy_status()["nodes"]) == 2)
        plane.proc.send_signal(signal.SIGTERM)
        assert plane.proc.wait(60) == 0
    finally:
        _stop(plane.proc)
    assert log.read_text() == ""
