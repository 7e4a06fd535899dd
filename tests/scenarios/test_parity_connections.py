"""DestinationRule connection settings in every mode (sidecar, library, proxyless gRPC): the
rule a ``workloadSelector`` picks for a caller, slow start (``warmup``) for an endpoint that
joins, TCP keepalive on the caller's upstream connection (seen from outside with ``ss``), and
the h2 upgrade (sidecar and library: gRPC is HTTP/2 already).
grpcio's gaps are asserted as what grpcio does (docs/library.md's table lists them)."""

from __future__ import annotations

import collections
import subprocess
from collections.abc import Callable

import pytest

import tulle.client
from tests.e2e.conftest import ControlPlane, Processes, free_port, synced, wait_until
from tests.manifests import destination_rule, virtual_service, workload
from tests.scenarios.conftest import (
    HERE,
    Caller,
    LibraryCaller,
    Serve,
    SidecarCaller,
    get_all,
)

WEB = "http://web:8080"
# The callers' pods are caller-N: their Workload is ``caller`` (labels app: caller).
CALLER = workload("caller")


def rule(name: str, version: str, selector: str = "") -> str:
    """A DestinationRule for web whose subset ``pick`` is the endpoints of ``version``."""
    select = f"  workloadSelector: {{matchLabels: {{{selector}}}}}\n" if selector else ""
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {name}}}
spec:
  host: web
{select}  subsets: [{{name: pick, labels: {{version: {version}}}}}]
---
"""


def test_a_workload_selector_gives_its_callers_their_own_rule(
    control_plane: ControlPlane, serve: Serve, caller_for: Callable[[], Caller], mode: str
) -> None:
    serve(a={"version": "v1"}, b={"version": "v2"})
    control_plane.apply(
        CALLER
        + virtual_service("    - route: [{destination: {host: web, subset: pick}}]")
        + rule("web", "v1")
        + rule("web-for-callers", "v2", "app: caller")
    )
    caller = caller_for()
    # The rule that selects the caller wins over the rule without a selector, in every mode:
    # the control plane sends each node the rule that applies to it.
    assert {o.backend for o in get_all(caller, f"{WEB}/", 6)} == {"b"}
    control_plane.apply(rule("web-for-callers", "v2", "app: someone-else"))
    wait_until(lambda: caller.get(f"{WEB}/").backend == "a", timeout=30)
    assert {o.backend for o in get_all(caller, f"{WEB}/", 6)} == {"a"}


def test_an_endpoint_that_joins_warms_up(
    control_plane: ControlPlane, serve: Serve, caller_for: Callable[[], Caller], mode: str
) -> None:
    serve(a={}, b={})
    control_plane.apply(
        virtual_service("    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}")
        + destination_rule(
            "{loadBalancer: {simple: ROUND_ROBIN, warmup: {duration: 600s, minimumPercent: 10}}}"
        )
    )
    caller = caller_for()
    assert {o.backend for o in get_all(caller, f"{WEB}/", 10)} == {"a", "b"}
    serve(late={})  # joins now: 10% of its weight for the test's few seconds of its window
    if mode == "proxyless":
        wait_until(lambda: caller.get(f"{WEB}/").backend == "late", timeout=30)
    else:
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)
    counts = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/", 105))
    if mode == "proxyless":  # gap: grpcio has no slow start; round robin gives it a third
        assert counts["late"] >= 30
    else:  # weights 1 : 1 : 0.1, in a smooth round robin: 5 of 105
        assert 3 <= counts["late"] <= 7
        assert counts["a"] + counts["b"] + counts["late"] == 105


def keepalive_timers(port: int) -> list[str]:
    """The timer column of every established connection to ``port`` (``ss -o``)."""
    shown = subprocess.run(
        ["ss", "-tnoH", "state", "established", "dport", "=", f":{port}"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [line.split()[-1] if "timer:" in line else "-" for line in shown.splitlines()]


def test_tcp_keepalive_on_the_callers_upstream_connection(
    control_plane: ControlPlane, serve: Serve, caller_for: Callable[[], Caller], mode: str
) -> None:
    backends = serve(a={})
    control_plane.apply(
        virtual_service("    - route: [{destination: {host: web}}]")
        + destination_rule(
            "{connectionPool: {tcp: {tcpKeepalive: {time: 1234s, interval: 7s, probes: 3}}}}"
        )
    )
    caller = caller_for()
    assert caller.get(f"{WEB}/").backend == "a"
    # The connection stays open in the caller's pool, its keepalive timer running: 1234s
    # (ss rounds it to 20min) until the first probe.
    timers = keepalive_timers(backends.ports["a"])
    if mode == "proxyless":  # gap: grpcio ignores the Cluster's upstream_connection_options
        assert timers
        assert not any(t.startswith("timer:(keepalive,20min") for t in timers)
    else:
        assert len(timers) == 1
        assert timers[0].startswith("timer:(keepalive,20min,0)")


SIDE = workload("side", "  ports: [{name: http, port: 8080}]\n")


def upgrade_rule(host: str, policy: str) -> str:
    return destination_rule(
        f"{{connectionPool: {{http: {{h2UpgradePolicy: {policy}}}}}}}", host=host
    )


@pytest.mark.parametrize("kind", ["sidecar", "library"])  # proxyless: n/a, gRPC is HTTP/2
def test_h2_upgrade_sends_http1_requests_as_http2(
    control_plane: ControlPlane, processes: Processes, kind: str
) -> None:
    only_h2 = processes.start_backend(HERE / "h2c_backend.py", "h2only")
    control_plane.register(service="h2web", address="127.0.0.1", port=only_h2, servicePort=8080)
    # An HTTP/1.1 app behind a sidecar: an upgraded request reaches it in HTTP/1.1.
    app = processes.http_backend("app")
    inbound = free_port()
    callee = processes.sidecar(
        control_plane, "side-0", None, "--inbound-port", str(inbound), "--app-port", str(app)
    )
    control_plane.register(service="side", address="127.0.0.1", port=inbound, servicePort=8080)
    control_plane.apply(SIDE + upgrade_rule("h2web", "UPGRADE") + upgrade_rule("side", "UPGRADE"))
    wait_until(lambda: synced(control_plane, callee.node), timeout=15)
    caller: Caller = (
        SidecarCaller(control_plane, processes)
        if kind == "sidecar"
        else LibraryCaller(control_plane)
    )
    try:
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)
        upgraded = caller.get("http://h2web:8080/")
        assert (upgraded.status, upgraded.backend) == (200, "h2only")
        assert upgraded.headers["x-protocol"] == "HTTP/2"
        assert caller.get("http://side:8080/").backend == "app"
        # Not upgraded, the HTTP/2-only backend cannot answer.
        control_plane.apply(upgrade_rule("h2web", "DO_NOT_UPGRADE"))
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)
        assert caller.get("http://h2web:8080/").status == 503
    finally:
        caller.close()
        tulle.client.shutdown()
