"""Zone aware load balancing in translation (a DestinationRule's ``zoneAwareLbSetting``): the
shares Envoy's zone aware routing reaches (the worked examples of Envoy's own code and docs),
sent as EDS locality weights per caller from the endpoints of the caller's own service and of
the upstream; the region tiers Istio puts around it; and a Kubernetes Service's
``trafficDistribution`` as the locality failover Istio makes of it."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import pytest
from google.protobuf.json_format import MessageToDict

from tests.control.locality_config import (
    caller_resources,
    caller_workload,
    locality_config,
    model_of,
)
from tulle.api import validate_text
from tulle.api.kubernetes import service_of
from tulle.api.model_locality import LocalityLbPolicy
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate.locality import Member, locality_groups, service_policy, with_topology
from tulle.control.translate.zone_aware import SCALE, zone_shares
from tulle.xds import types

A, B, C = "r/a", "r/b", "r/c"


@pytest.mark.parametrize(
    ("local", "upstream", "expected"),
    [
        # Envoy's load_balancer_impl.cc: local 40/40/20, upstream 25/50/25: 25/40 of the calls
        # stay; the residual capacities (0, 50-40, 25-20) take the rest, 2 to 1.
        ({A: 2, B: 2, C: 1}, {A: 1, B: 2, C: 1}, {A: "5/8", B: "1/4", C: "1/8"}),
        # Its "local 20%, upstream 10%: only 50% of the calls can stay".
        ({A: 1, B: 4}, {A: 1, B: 9}, {A: "1/2", B: "1/2"}),
        # The docs' second case: the upstream's local share is larger: every call stays.
        ({A: 1, B: 1}, {A: 3, B: 1}, {A: "1", B: "0"}),
        ({A: 1, B: 1}, {A: 1, B: 1}, {A: "1", B: "0"}),
        # A zone where the caller's service has nothing: all of its share is residual.
        ({A: 3, B: 1}, {A: 1, B: 1, C: 2}, {A: "1/3", B: "0", C: "2/3"}),
    ],
)
def test_zone_shares_are_envoys(local, upstream, expected):
    shares = zone_shares(local, upstream, A)
    assert shares == {k: Fraction(v) for k, v in expected.items()}


def test_no_zone_routing_without_an_upstream_in_the_callers_zone_or_a_service_of_its_own():
    assert zone_shares({A: 1, B: 1}, {A: 0, B: 2}, A) is None
    assert zone_shares({A: 1}, {B: 2, C: 1}, A) is None
    assert zone_shares({}, {A: 1, B: 1}, A) is None


HOST = "hello.default.svc.cluster.local"
CLUSTER = f"outbound|5000||{HOST}"


def config(setting: str) -> str:
    """curl (serving a service of its own) and hello with ``zoneAwareLbSetting: setting``."""
    return locality_config("hello", f"      zoneAwareLbSetting: {setting}\n", caller_serves=True)


# The caller's own service: 2 of 4 in region1/zone1 (50/25/25).
CALLERS = {"region1/zone1": 2, "region1/zone2": 1, "region1/zone3": 1}
# The upstream: 1 of 5 in region1's zone1 (20/40/40), one in region2, one in region3.
BACKENDS = ["region1/zone1", "region1/zone2", "region1/zone2", "region1/zone3",
            "region1/zone3", "region2/zone1", "region3/zone1"]  # fmt: skip


def snapshot(setting, healthy=lambda port: True, callers=CALLERS):
    endpoints = [
        Endpoint(HOST, "127.0.0.1", 7000 + i, 5000, "HTTP", locality=locality,
                 workload="hello", healthy=healthy(7000 + i))
        for i, locality in enumerate(BACKENDS)
    ]  # fmt: skip
    port = 9000
    for locality, count in callers.items():
        for _ in range(count):
            endpoints.append(
                Endpoint("curl.default.svc.cluster.local", "127.0.0.1", port, 8080,
                         locality=locality, workload="curl")
            )  # fmt: skip
            port += 1
    return build_snapshot(1, model_of(config(setting)), tuple(endpoints))


def localities(snap, pod="curl-0", mode="sidecar"):
    """Per priority, per locality: (weight, ports); and the cluster's common_lb_config."""
    resources = caller_resources(snap, pod, mode)
    found: dict[int, dict[str, tuple[int, list[int]]]] = {}
    for group in MessageToDict(resources[types.ENDPOINT][CLUSTER])["endpoints"]:
        where = group["locality"]
        name = "/".join(where[k] for k in ("region", "zone") if k in where)
        ports = sorted(e["endpoint"]["address"]["socketAddress"]["portValue"]
                       for e in group["lbEndpoints"])  # fmt: skip
        found.setdefault(group.get("priority", 0), {})[name] = (group["loadBalancingWeight"], ports)
    common = MessageToDict(resources[types.CLUSTER][CLUSTER]).get("commonLbConfig", {})
    return found, common


@pytest.mark.parametrize("mode", ["sidecar", "library", "proxyless"])
def test_the_callers_region_is_zone_routed_and_the_other_regions_follow(mode):
    found, common = localities(snapshot("{enabled: true, minClusterSize: 5}"), mode=mode)
    assert common == {"localityWeightedLbConfig": {}}
    # 20/40/40 upstream against 50/25/25 callers: 20/50 = 40% stays in zone1; zone2 and zone3
    # have 15 points of residual capacity each: 30% each.
    assert found[0] == {
        "region1/zone1": (400_000, [7000]),
        "region1/zone2": (300_000, [7001, 7002]),
        "region1/zone3": (300_000, [7003, 7004]),
    }
    # The other regions after it, alike (no failover rule), weighted by their endpoints.
    assert found[1] == {"region2/zone1": (1, [7005]), "region3/zone1": (1, [7006])}
    assert sum(w for w, _ in found[0].values()) == SCALE


def test_failover_orders_the_other_regions_and_min_cluster_size_turns_zone_routing_off():
    setting = "{enabled: true, failover: [{from: region1, to: region3}]}"
    found, _ = localities(snapshot(setting))  # 5 in region1 < 6, Envoy's default minimum
    assert found[0] == {
        "region1/zone1": (1, [7000]),
        "region1/zone2": (2, [7001, 7002]),
        "region1/zone3": (2, [7003, 7004]),
    }
    assert list(found[1]) == ["region3/zone1"]
    assert list(found[2]) == ["region2/zone1"]


def test_the_shares_follow_health_and_the_callers_own_service():
    # zone2's two backends unhealthy in the registry: region1's healthy upstream is 1/1/2,
    # which is under minClusterSize 4: no zone routing.
    down = {7001, 7002}
    found, _ = localities(
        snapshot("{enabled: true, minClusterSize: 4}", healthy=lambda port: port not in down)
    )
    assert found[0]["region1/zone1"] == (1, [7000])
    # With minClusterSize 3 it routes: upstream 1/3 in zone1 (of zone1, zone3) against the
    # callers' 1/2: 2/3 stay, zone3 (2/3 - 1/4 residual) takes the rest, zone2 gets 1.
    found, _ = localities(
        snapshot("{enabled: true, minClusterSize: 3}", healthy=lambda port: port not in down)
    )
    assert {k: w for k, (w, _) in found[0].items()} == {
        "region1/zone1": 666_667,
        "region1/zone2": 1,
        "region1/zone3": 333_333,
    }
    # A caller whose workload serves no service has no "local cluster": no zone routing.
    found, _ = localities(snapshot("{enabled: true, minClusterSize: 1}", callers={}))
    assert {k: w for k, (w, _) in found[0].items()} == {
        "region1/zone1": 1,
        "region1/zone2": 2,
        "region1/zone3": 2,
    }


def test_an_unset_enabled_is_off_and_warned_and_both_locality_settings_are_refused():
    result = validate_text(config("{minClusterSize: 2}"))
    assert [(f.severity.value, f.field) for f in result.findings] == [
        ("WARNING", "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting.enabled")
    ]
    found, common = localities(snapshot("{minClusterSize: 2}"))
    assert set(found) == {0}
    assert "localityWeightedLbConfig" not in common
    both = config("{enabled: true}\n      localityLbSetting: {enabled: true}")
    assert [f.message for f in validate_text(both).findings if f.severity.value == "ERROR"] == [
        "set only one of localityLbSetting, zoneAwareLbSetting "
        "(got localityLbSetting, zoneAwareLbSetting)"
    ]
    label = config("{enabled: true, failoverPriority: [topology.kubernetes.io/zone]}")
    assert any("name no topology label" in f.message for f in validate_text(label).findings)


def priority_localities(snap):
    """The localities of each EDS priority, in priority order, for a caller in region1/zone1."""
    groups = MessageToDict(caller_resources(snap)[types.ENDPOINT][CLUSTER])["endpoints"]
    found: dict[int, list[str]] = {}
    for group in groups:
        where = group["locality"]
        found.setdefault(group.get("priority", 0), []).append(f"{where['region']}/{where['zone']}")
    return [found[p] for p in sorted(found)]


KUBE_SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "hello", "namespace": "default"},
    "spec": {"ports": [{"name": "http", "port": 5000}]},
}


@pytest.mark.parametrize("value", ["PreferClose", "PreferSameZone", "PreferSameNode", None])
def test_a_services_traffic_distribution_prioritizes_by_locality_without_a_rule(value):
    spec = dict(KUBE_SERVICE["spec"], **({"trafficDistribution": value} if value else {}))
    service = service_of(dict(KUBE_SERVICE, spec=spec))
    assert service is not None
    assert service.traffic_distribution == (value or "")
    # Only the caller's Workload: the Kubernetes Service defines the host.
    model = model_of(caller_workload(serves=True))
    endpoints = tuple(
        Endpoint(HOST, "127.0.0.1", 7000 + i, 5000, "HTTP", locality=locality, workload="hello")
        for i, locality in enumerate(BACKENDS)
    )
    snap = build_snapshot(1, model, endpoints, registry_services=(service,))
    if value is None:  # no outlier detection, no rule: Istio prioritizes nothing
        assert priority_localities(snap) == [sorted(set(BACKENDS))]
        return
    # Istio's failoverPriority [network, region, zone], with no outlier detection:
    # same zone, then same region, then the rest.
    assert priority_localities(snap) == [
        ["region1/zone1"],
        ["region1/zone2", "region1/zone3"],
        ["region2/zone1", "region3/zone1"],
    ]


MESH = """\
---
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh}}
spec: {{localityLbSetting: {setting}}}
"""
OUTLIER_ONLY = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: hello}
spec:
  host: hello
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 1}}
"""


@pytest.mark.parametrize(
    ("mesh", "distribution", "expected"),
    [
        # The Mesh's failover applies to a rule that sets no localityLbSetting.
        ("{failover: [{from: region1, to: region3}]}", None,
         [["region1/zone1"], ["region1/zone2", "region1/zone3"], ["region3/zone1"],
          ["region2/zone1"]]),
        # The Mesh turns locality load balancing off for every such rule.
        ("{enabled: false}", None, [sorted(set(BACKENDS))]),
        # A Service's trafficDistribution comes before the Mesh's setting, as in Istio.
        ("{enabled: false}", "PreferClose",
         [["region1/zone1"], ["region1/zone2", "region1/zone3"],
          ["region2/zone1", "region3/zone1"]]),
    ],
)  # fmt: skip
def test_the_meshs_locality_setting_is_the_default_after_the_service(mesh, distribution, expected):
    model = model_of(caller_workload(serves=True) + OUTLIER_ONLY + MESH.format(setting=mesh))
    spec = dict(
        KUBE_SERVICE["spec"], **({"trafficDistribution": distribution} if distribution else {})
    )
    service = service_of(dict(KUBE_SERVICE, spec=spec))
    assert service is not None
    endpoints = tuple(
        Endpoint(HOST, "127.0.0.1", 7000 + i, 5000, "HTTP", locality=locality, workload="hello")
        for i, locality in enumerate(BACKENDS)
    )
    snap = build_snapshot(1, model, endpoints, registry_services=(service,))
    assert priority_localities(snap) == expected


def test_prefer_close_ignores_the_subzone_and_prefer_same_node_ranks_the_node_first():
    def member(name, locality, node):
        labels = with_topology({"kubernetes.io/hostname": node}, locality)
        return Member(name, locality, labels, 1)

    found = [
        member("here", "region1/zone1", "n1"),
        member("rack", "region1/zone1/rack7", "n2"),
        member("zone2", "region1/zone2", "n3"),
    ]
    caller = {"kubernetes.io/hostname": "n2"}
    for value, expected in (
        ("PreferClose", {"here": 0, "rack": 0, "zone2": 1}),  # Istio 1.27+: no subzone
        ("PreferSameZone", {"here": 0, "rack": 0, "zone2": 1}),
        ("PreferSameNode", {"rack": 0, "here": 1, "zone2": 2}),
    ):
        policy, forced = service_policy(None, value)
        assert forced
        groups = locality_groups(found, "region1/zone1", caller, policy, outlier_detection=forced)
        assert {m.item: g.priority for g in groups for m in g.members} == expected, value
    # A DestinationRule's own setting wins, and is not forced.
    mine = LocalityLbPolicy(enabled=False)
    assert service_policy(mine, "PreferClose") == (mine, False)


def test_zone_aware_beside_consistent_hash_is_a_warning():
    text = config("{enabled: true}").replace(
        "simple: ROUND_ROBIN", "consistentHash: {httpHeaderName: x-user}"
    )
    assert [(f.severity.value, f.field, f.message) for f in validate_text(text).findings] == [
        (
            "WARNING",
            "spec.trafficPolicy.loadBalancer.zoneAwareLbSetting",
            "consistentHash picks by hash, not by zone: the zone shares are not applied "
            "(the region tiers are), as in Envoy",
        )
    ]
