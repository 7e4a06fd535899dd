"""Locality failover as the istio.io "Locality failover" task shows it, in every mode (sidecar,
library, proxyless gRPC): a caller in region1/zone1, backends in region1/zone1, region2/zone2
and region3/zone3, a DestinationRule with outlier detection and ``failover: region1 ->
region2``. Calls stay in region1/zone1; once that backend fails (its process is gone, as the
task drains its sidecar) it is ejected and the calls go to the failover region, region2, never
to region3. grpcio follows the EDS priorities with its own priority policy (gRFC A37): it
moves on when the backend's connection fails, with no ejection, but not from a backend that
answers with errors (a gap). And the "Locality weighted distribution" task's shares, and
Envoy's zone aware routing (``zoneAwareLbSetting``) in and out of the caller's zone, and a
Kubernetes Service's ``trafficDistribution: PreferClose`` keeping calls in the caller's zone."""

from __future__ import annotations

import collections
from collections.abc import Callable

from tests.e2e.conftest import ControlPlane, Processes, wait_until
from tests.manifests import destination_rule, virtual_service, workload
from tests.scenarios.conftest import Caller, Serve, SidecarCaller, get_all

WEB = "http://web:8080"
CLUSTER = "outbound|8080||web.default.svc.cluster.local"
CALLER = workload("caller", "  locality: region1/zone1\n")
# The task's DestinationRule (its connection pool aside: a new connection per request is how
# the task makes the drained sidecar refuse the very next call).
FAILOVER = (
    "{loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true, "
    "failover: [{from: region1, to: region2}]}}, "
    "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}}"
)


def test_locality_failover_goes_to_the_failover_region(
    control_plane: ControlPlane,
    processes: Processes,
    serve: Serve,
    caller_for: Callable[[], Caller],
    mode: str,
) -> None:
    serve(local={"locality": "region1/zone1"})
    local = processes.started[-1]
    serve(far={"locality": "region2/zone2"}, farther={"locality": "region3/zone3"})
    # And api, whose local backend is alive but answers every call with an error.
    serve(service="api", broken={"locality": "region1/zone1", "fail_rate": 1.0})
    serve(service="api", spare={"locality": "region2/zone2"})
    no_retries = "    - route: [{destination: {host: %s}}]\n      retries: {attempts: 0}"
    control_plane.apply(
        CALLER
        + virtual_service(no_retries % "web")
        + destination_rule(FAILOVER)
        + virtual_service(no_retries % "api", host="api")
        + destination_rule(FAILOVER, host="api")
    )
    caller: Caller = caller_for()

    outcomes = get_all(caller, "http://api:8080/", 8)
    if mode == "proxyless":
        # gap: grpcio's outlier detection ejects on success rate and failure percentage only
        # (gRFC A50), not on consecutive errors, and its priority policy moves on only when a
        # priority cannot connect: the answering, failing backend keeps every call.
        assert {(o.status, o.backend) for o in outcomes} == {(503, "broken")}
    else:  # the first error ejects it (consecutive5xxErrors: 1); region2 takes the rest
        assert [(o.status, o.backend) for o in outcomes] == [(503, "broken")] + [(200, "spare")] * 7

    assert {o.backend for o in get_all(caller, f"{WEB}/", 20)} == {"local"}
    local.kill()
    local.wait()

    def failed_over() -> bool:
        return caller.get(f"{WEB}/", timeout=5).backend == "far"

    wait_until(failed_over, timeout=30)
    after = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/", 20))
    assert after == {"far": 20}
    if isinstance(caller, SidecarCaller):  # the sidecar's admin page shows where calls go
        clusters = caller.sidecar.admin("/clusters").json()["clusters"]
        web = next(c for c in clusters if c["name"] == CLUSTER)
        assert web["priority_shares"] == [0.0, 100.0, 0.0]
        assert {e["locality"]: (e["priority"], e["ejected"]) for e in web["endpoints"]} == {
            "region1/zone1": (0, True),
            "region2/zone2": (1, False),
            "region3/zone3": (2, False),
        }


# The istio.io "Locality weighted distribution" task's rule: from region1/zone1, 70% to
# region1/zone1, 20% to region1/zone2, 10% to region3/zone4 and none to region2/zone3.
DISTRIBUTE = (
    "{loadBalancer: {localityLbSetting: {enabled: true, distribute: [{from: region1/zone1/*, "
    "to: {'region1/zone1/*': 70, 'region1/zone2/*': 20, 'region3/zone4/*': 10}}]}}, "
    "outlierDetection: {consecutive5xxErrors: 100, interval: 1s, baseEjectionTime: 1m}}"
)


def _register(plane: ControlPlane, grpc: bool, service: str, **ports: tuple[int, str]) -> None:
    for name, (port, locality) in ports.items():
        plane.register(
            service=service, address="127.0.0.1", port=port, servicePort=8080,
            labels={"version": name}, protocol="GRPC" if grpc else "HTTP", locality=locality,
        )  # fmt: skip


CLOSE = """\
apiVersion: v1
kind: Service
metadata: {name: close, namespace: default}
spec:
  trafficDistribution: PreferClose
  ports: [{name: %s, port: 8080}]
---
"""
ZONE_AWARE = "{loadBalancer: {simple: ROUND_ROBIN, zoneAwareLbSetting: {enabled: true, %s}}}"


def test_locality_weighted_distribution_and_zone_aware_routing_share_the_calls(
    control_plane: ControlPlane, serve: Serve, caller_for: Callable[[], Caller], mode: str
) -> None:
    backends = serve(
        z1={"locality": "region1/zone1"},
        z2={"locality": "region1/zone2"},
        z3={"locality": "region2/zone3"},
        z4={"locality": "region3/zone4"},
    )
    # Envoy's zone aware routing (zoneAwareLbSetting) in the same mesh, computed by the control
    # plane from the caller's own service and the upstream. The caller's service has 2 of its
    # 4 endpoints in region1/zone1 (50/25/25 over zone1, zone2, zone3; never called).
    for index, locality in enumerate(["region1/zone1"] * 2 + ["region1/zone2", "region1/zone3"]):
        control_plane.register(
            service="caller", address="127.0.0.1", port=1 + index, servicePort=8080,
            workload="caller", locality=locality,
        )  # fmt: skip
    # zoned: 1 of the 5 endpoints of region1 in zone1 (20/40/40), and z3 in region2.
    serve(
        service="zoned",
        y2={"locality": "region1/zone2"},
        y3={"locality": "region1/zone3"},
        x3={"locality": "region1/zone3"},
    )
    grpc, ports = backends.grpc, backends.ports
    _register(control_plane, grpc, "zoned", z1=(ports["z1"], "region1/zone1"),
              z2=(ports["z2"], "region1/zone2"), z3=(ports["z3"], "region2/zone3"))  # fmt: skip
    _register(control_plane, grpc, "near", z1=(ports["z1"], "region1/zone1"),
              y2=(ports["y2"], "region1/zone2"))  # fmt: skip
    # near: half of its endpoints in zone1, enough for the caller's half: every call stays.
    # close: a Kubernetes Service with trafficDistribution: PreferClose, no DestinationRule.
    _register(control_plane, grpc, "close", z1=(ports["z1"], "region1/zone1"),
              z2=(ports["z2"], "region1/zone2"), z4=(ports["z4"], "region3/zone4"))  # fmt: skip
    control_plane.apply(
        CALLER
        + CLOSE % ("grpc" if grpc else "http")
        + virtual_service("    - route: [{destination: {host: web}}]")
        + destination_rule(DISTRIBUTE)
        + "".join(
            virtual_service(f"    - route: [{{destination: {{host: {host}}}}}]", host=host)
            + destination_rule(ZONE_AWARE % f"minClusterSize: {size}", host=host)
            for host, size in (("zoned", 5), ("near", 1))
        )
    )
    caller = caller_for()
    counts = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/", 300))
    # grpcio too: its weighted_target policy picks a locality by its EDS weight. Bounds: 4.5
    # standard deviations (70% of 300: sd 7.9 calls; 20%: 6.9; 10%: 5.2).
    assert counts["z3"] == 0
    assert 174 <= counts["z1"] <= 246
    assert 29 <= counts["z2"] <= 91
    assert 7 <= counts["z4"] <= 53
    assert sum(counts.values()) == 300

    # grpcio's weighted_target picks among the localities connected so far: a new channel's
    # first call may go to whichever connects first. Once zone1's is up, every call stays.
    wait_until(lambda: caller.get("http://near:8080/").backend == "z1", timeout=15)
    assert {o.backend for o in get_all(caller, "http://near:8080/", 20)} == {"z1"}
    # close: the caller's zone first, with or without outlier detection (Istio 1.24+).
    wait_until(lambda: caller.get("http://close:8080/").backend == "z1", timeout=15)
    assert {o.backend for o in get_all(caller, "http://close:8080/", 20)} == {"z1"}
    # zoned: 20/50 = 40% of the calls stay in zone1; zone2 and zone3 each have 40 - 25 = 15
    # points of residual capacity: 30% each; region2 is a later priority: none. Bounds: 4.5
    # standard deviations (40% of 300: sd 8.5 calls; 30%: sd 7.9).
    counts = collections.Counter(o.backend for o in get_all(caller, "http://zoned:8080/", 300))
    assert counts["z3"] == 0
    assert 82 <= counts["z1"] <= 158
    assert 55 <= counts["z2"] + counts["y2"] <= 125
    assert 55 <= counts["y3"] + counts["x3"] <= 125
    assert sum(counts.values()) == 300
