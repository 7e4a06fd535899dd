"""Planning a local mesh: ports handed out once each, below the kernel's ephemeral range (so no
outgoing connection's local port takes one before its program binds it), and ``$(VAR)``
expansion in a Workload's command."""

from __future__ import annotations

from pathlib import Path

from tulle.local.plan import expand, free_port


def test_ports_are_handed_out_once_and_outside_the_ephemeral_range():
    first_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(300)]
    assert len(set(ports)) == 300
    assert max(ports) < first_ephemeral


def test_variables_in_the_command_are_expanded_as_kubernetes_does():
    env = {"PORT": "20001", "NAME": "echo-0"}
    assert expand("--port=$(PORT)", env) == "--port=20001"
    assert expand("$(NAME):$(PORT)", env) == "echo-0:20001"
    assert expand("$(MISSING) costs $$5", env) == "$(MISSING) costs $5"
