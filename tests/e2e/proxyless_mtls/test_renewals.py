"""Proxyless gRPC under zero trust (the package's docstring says how): calls keep succeeding over mTLS
across certificate renewals at both ends, and an agent keeps its files while the CA is away."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    _stop,
    start_control_plane,
    wait_until,
)
from tests.e2e.proxyless_mtls.proxyless import (
    CLIENT,
    CONFIG,
    PEER,
    TULLE,
    Mesh,
    free_port,
    not_after,
    serial,
)

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("proxyless-mtls"),  # one worker for all: one mesh (conftest.py)
]


def test_calls_keep_succeeding_across_renewals(
    mesh: Mesh, started: list[subprocess.Popen[str]], tmp_path: Path
) -> None:
    server = mesh.started[0]
    client_certs = tmp_path / "client-certs"
    env = mesh.agent(started, client_certs, "client-0", "client")
    greeter_certs = mesh.server_certs
    first_server, first_server_expiry = serial(greeter_certs), not_after(greeter_certs)
    first_client_expiry = not_after(client_certs)
    # The files as grpcio's file_watcher reads them; the key never left the agent but for this.
    assert sorted(os.listdir(client_certs)) == [
        "cert-chain.pem", "key.pem", "root-cert.pem", "xds-token"
    ]  # fmt: skip
    assert (client_certs / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (client_certs / "xds-token").stat().st_mode & 0o777 == 0o600

    client = subprocess.Popen(
        [sys.executable, PEER, "client", mesh.target, "--count", "100000", "--seconds", "240",
         "--interval", "0.2", "--fresh"],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    results: list[dict[str, Any]] = []
    answered_at: list[float] = []  # when each line arrived (wall clock, as certificates count)

    def read() -> None:
        assert client.stdout is not None
        for line in client.stdout:
            results.append(json.loads(line))
            answered_at.append(time.time())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    first_expiry = max(first_server_expiry, first_client_expiry)

    def renewed_and_past_the_first_expiry() -> bool:
        serials = {r["reply"].rsplit("|", 1)[1] for r in results if r["ok"]}
        return (
            len(serials) >= 2
            and serial(greeter_certs) != first_server
            and any(at > first_expiry + 1 for at in answered_at)
        )

    try:
        wait_until(renewed_and_past_the_first_expiry, timeout=180, interval=0.2)
    finally:
        _stop(client)
        reader.join(30)
    assert server.poll() is None
    assert results
    failed = [r for r in results if not r["ok"]]
    assert failed == []
    # Every call went over mTLS: the server saw the client's SPIFFE id, with the certificate
    # the client's agent held at the time (at least two of them: the renewal was used).
    callers = {tuple(r["reply"].split("|")[:2]) for r in results}
    assert callers == {("greeter", CLIENT)}
    assert len({r["reply"].rsplit("|", 1)[1] for r in results}) >= 2
    # The server is STRICT, as tulle proxy-status shows for proxyless servers.
    assert mesh.server_modes() == {f"127.0.0.1:{mesh.port}": "STRICT"}
    shown = subprocess.run(
        [TULLE, "proxy-status", "--server", mesh.plane.api, "--token", mesh.plane.token],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    # Two streams of the node: grpcio's server, and its agent's (the trust bundle only).
    [row, agent] = sorted(
        (line for line in shown.splitlines() if "greeter-0.default" in line),
        key=lambda line: "(agent)" in line,
    )
    assert row.rstrip().endswith(f"STRICT 127.0.0.1:{mesh.port}"), row
    assert "proxyless (agent)" in agent, agent


def test_the_files_stay_while_the_ca_is_away(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(CONFIG.format(port=free_port()))
    state = tmp_path / "state"
    plane = start_control_plane(state, tmp_path / "config", insecure_xds=False)
    mesh = Mesh(plane, 0, state / "root-cert.pem", tmp_path / "unused")
    certs = tmp_path / "certs"
    log = tmp_path / "agent.log"
    command = mesh.agent_command(certs, "client-0", mesh.token("client", "client-0"))
    command[command.index("--log-level") + 1] = "info"
    with open(log, "w") as output:
        agent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=output, text=True)
    try:
        assert agent.stdout is not None
        assert agent.stdout.readline() == f"tulle agent: certificates in {certs}\n"
        _stop(plane.proc)
        # Renewal (at about half of the 10 s) finds no CA: the agent says why, keeps running,
        # retries, and the files stay as they were through the retry.
        refused = "workload certificate not renewed (UNAVAILABLE: connect: Connect call failed "
        refused += f"('127.0.0.1', {plane.secure_xds_port}))"
        wait_until(lambda: refused in log.read_text(), timeout=30)
        kept = serial(certs)
        wait_until(lambda: log.read_text().count(refused) >= 2, timeout=30)
        assert agent.poll() is None
        assert serial(certs) == kept
        plane = start_control_plane(
            state, tmp_path / "config", insecure_xds=False, secure_xds_port=plane.secure_xds_port
        )
        wait_until(lambda: serial(certs) != kept, timeout=60)
        assert agent.poll() is None
    finally:
        _stop(agent)
        _stop(plane.proc)
