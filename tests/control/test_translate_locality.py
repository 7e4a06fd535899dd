"""Locality load balancing in translation: the EDS priorities and locality weights a caller gets
from its locality, its labels and the DestinationRule's ``localityLbSetting``, as Istio assigns
them (the istio.io "Locality failover" and "Locality weighted distribution" tasks), and the
cluster settings that go with them."""

from __future__ import annotations

import pytest
from google.protobuf.json_format import MessageToDict

from tests.control.locality_config import (
    caller_node,
    caller_resources,
    locality_config,
    model_of,
)
from tulle.api.model_locality import LocalityLbPolicy
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import Translator, translate
from tulle.control.translate.context import NodeView
from tulle.control.translate.locality import (
    Member,
    locality_groups,
    locality_matches,
    with_topology,
)
from tulle.xds import types
from tulle.xds.node import parse_node_id

HOST = "helloworld.default.svc.cluster.local"
CLUSTER = f"outbound|5000||{HOST}"
# The task's four backends (helloworld in region1.zone1, region1.zone2, region2.zone3,
# region3.zone4), and one more in region1.zone1 in another subzone.
LOCALITIES = {
    "r1z1": "region1/zone1",
    "r1z1s": "region1/zone1/rack7",
    "r1z2": "region1/zone2",
    "r2z3": "region2/zone3",
    "r3z4": "region3/zone4",
}
FAILOVER = "{from: region1, to: region2}"


def members(localities=LOCALITIES, labels=None):
    return [
        Member(name, locality, with_topology((labels or {}).get(name, {}), locality), 1)
        for name, locality in localities.items()
    ]


def priorities(groups):
    """Member name -> priority (each member in one group)."""
    return {m.item: g.priority for g in groups for m in g.members}


def test_the_task_priorities_from_region1_zone1():
    policy = LocalityLbPolicy(failover=(("region1", "region2"),))
    groups = locality_groups(members(), "region1/zone1", {}, policy, outlier_detection=True)
    # istio.io: 0 same region/zone/subzone, 1 another subzone, 2 another zone, 3 the failover
    # region, 4 any other region.
    assert priorities(groups) == {"r1z1": 0, "r1z1s": 1, "r1z2": 2, "r2z3": 3, "r3z4": 4}
    assert all(g.weight == 1 for g in groups)


def test_priorities_have_no_gaps_and_default_failover_ranks_other_regions_alike():
    # No failover rule (the mesh default, localityLbSetting unset): other regions share 3,
    # renumbered without the gap the missing subzone match leaves.
    found = members({k: v for k, v in LOCALITIES.items() if k != "r1z1s"})
    groups = locality_groups(found, "region1/zone1", {}, None, outlier_detection=True)
    assert priorities(groups) == {"r1z1": 0, "r1z2": 1, "r2z3": 2, "r3z4": 2}


@pytest.mark.parametrize(
    ("policy", "outlier"),
    [
        (LocalityLbPolicy(failover=(("region1", "region2"),)), False),  # no outlier detection
        (LocalityLbPolicy(enabled=False, failover=(("region1", "region2"),)), True),
        (None, False),
    ],
)
def test_without_outlier_detection_or_when_disabled_every_locality_is_priority_0(policy, outlier):
    groups = locality_groups(members(), "region1/zone1", {}, policy, outlier)
    assert set(priorities(groups).values()) == {0}
    assert [g.locality for g in groups] == sorted(LOCALITIES.values())


def test_distribute_weights_the_localities_and_leaves_the_others_out():
    policy = LocalityLbPolicy(
        distribute=(
            ("region2/*", (("region2/*", 100),)),
            ("region1/zone1/*", (("region1/zone1/*", 70), ("region1/zone2/*", 20), ("*", 10))),
        )
    )
    found = members({**LOCALITIES, "r1z1b": "region1/zone1"})
    groups = locality_groups(found, "region1/zone1", {}, policy, outlier_detection=False)
    weights = {g.locality: g.weight for g in groups}
    # 70 split over region1/zone1 (two endpoints) and region1/zone1/rack7 (one), rounded up;
    # the first pattern that matches a locality takes it.
    assert weights == {
        "region1/zone1": 47,
        "region1/zone1/rack7": 24,
        "region1/zone2": 20,
        "region2/zone3": 5,
        "region3/zone4": 5,
    }
    assert set(priorities(groups).values()) == {0}
    from_region2 = locality_groups(found, "region2/zone3", {}, policy, False)
    assert [(g.locality, g.weight) for g in from_region2] == [("region2/zone3", 100)]
    # A caller no rule's from matches keeps the localities' own weights.
    elsewhere = locality_groups(found, "region9/zone1", {}, policy, False)
    assert {g.locality: g.weight for g in elsewhere}["region1/zone1"] == 2


def test_failover_priority_orders_by_agreeing_labels_then_by_failover():
    labels = {
        "r1z1": {"network": "n1", "tier": "a"},
        "r1z2": {"network": "n1", "tier": "b"},
        "r2z3": {"network": "n2", "tier": "a"},
        "r3z4": {"network": "n1", "tier": "a"},
    }
    found = members({k: LOCALITIES[k] for k in labels}, labels)
    caller = {"network": "n1", "tier": "a"}
    by_labels = LocalityLbPolicy(failover_priority=("network", "tier"))
    groups = locality_groups(found, "region1/zone1", caller, by_labels, True)
    # Both labels agree: 0 (r1z1, r3z4); the second differs: 1; the first differs: 2.
    assert priorities(groups) == {"r1z1": 0, "r3z4": 0, "r1z2": 1, "r2z3": 2}
    # name=value fixes the value instead of reading the caller's.
    fixed = LocalityLbPolicy(failover_priority=("network=n2",))
    assert priorities(locality_groups(found, "region1/zone1", caller, fixed, True)) == {
        "r2z3": 0, "r1z1": 1, "r1z2": 1, "r3z4": 1,
    }  # fmt: skip
    # With failover too, the localities order each label priority.
    both = LocalityLbPolicy(failover=(("region1", "region2"),), failover_priority=("network",))
    assert priorities(locality_groups(found, "region1/zone1", caller, both, True)) == {
        "r1z1": 0, "r1z2": 1, "r3z4": 2, "r2z3": 3,
    }  # fmt: skip
    # Topology labels come from the localities: a region label orders by region.
    region = LocalityLbPolicy(failover_priority=("topology.kubernetes.io/region",))
    assert priorities(locality_groups(found, "region1/zone1", {}, region, True)) == {
        "r1z1": 0, "r1z2": 0, "r3z4": 1, "r2z3": 1,
    }  # fmt: skip


def test_locality_patterns_match_as_istio_does():
    assert locality_matches("region1/zone1/rack7", "region1")
    assert locality_matches("region1/zone1/rack7", "region1/*")
    assert locality_matches("region1/zone1/rack7", "*")
    assert locality_matches("region1/zone1", "region1/zone1/*")
    assert not locality_matches("region1/zone2", "region1/zone1/*")
    assert not locality_matches("region2/zone1", "region1/*")


CONFIG = locality_config(
    "helloworld",
    f"""\
      localityLbSetting:
        enabled: true
        failover: [{FAILOVER}]
    outlierDetection: {{consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}}
  subsets: [{{name: v1, labels: {{version: v1}}}}]
""",
)


def snapshot():
    endpoints = tuple(
        Endpoint(HOST, "127.0.0.1", 7000 + i, 5000, "HTTP", (("version", "v1"),),
                 locality=locality, workload="helloworld")
        for i, locality in enumerate(LOCALITIES.values())
    )  # fmt: skip
    return build_snapshot(1, model_of(CONFIG), endpoints)


def ports_by_priority(assignment):
    found: dict[int, list[int]] = {}
    for group in MessageToDict(assignment)["endpoints"]:
        ports = [
            e["endpoint"]["address"]["socketAddress"]["portValue"] for e in group["lbEndpoints"]
        ]
        found.setdefault(group.get("priority", 0), []).extend(ports)
    return {p: sorted(ports) for p, ports in sorted(found.items())}


@pytest.mark.parametrize("mode", ["sidecar", "library", "proxyless"])
def test_a_caller_gets_the_priorities_of_its_workloads_locality(mode):
    snap = snapshot()
    resources = caller_resources(snap, mode=mode)
    expected = {0: [7000], 1: [7001], 2: [7002], 3: [7003], 4: [7004]}
    for cluster in (CLUSTER, f"outbound|5000|v1|{HOST}"):
        assert ports_by_priority(resources[types.ENDPOINT][cluster]) == expected
        common = MessageToDict(resources[types.CLUSTER][cluster])["commonLbConfig"]
        assert common == {"healthyPanicThreshold": {}, "localityWeightedLbConfig": {}}
    # A caller with no locality ranks only the endpoints without one first (none here).
    elsewhere = translate(snap, NodeView(mode, "default"))[types.ENDPOINT][CLUSTER]
    assert ports_by_priority(elsewhere) == {0: [7000, 7001, 7002, 7003, 7004]}


def test_callers_in_other_localities_get_their_own_translation():
    snap = snapshot()
    translator = Translator()  # one cache for both callers
    mine = translator.resources(snap, caller_node())[types.ENDPOINT][CLUSTER]
    theirs = translator.resources(snap, caller_node("other-0"))[types.ENDPOINT][CLUSTER]
    assert ports_by_priority(mine)[0] == [7000]
    assert ports_by_priority(theirs) == {0: [7000, 7001, 7002, 7003, 7004]}


def test_a_cluster_pods_locality_comes_from_the_registry() -> None:
    endpoints = snapshot().endpoints
    snap = build_snapshot(
        2,
        model_of(CONFIG),
        endpoints,
        pods={("default", "curl-7d9f-x2"): "curl"},
        pod_localities={("default", "curl-7d9f-x2"): "region2/zone3"},
    )
    node = parse_node_id("sidecar~10.1.2.3~curl-7d9f-x2.default~default.svc.cluster.local")
    assignment = Translator().resources(snap, node)[types.ENDPOINT][CLUSTER]
    # From region2 (no failover rule from there): region2 first, the other regions alike.
    assert ports_by_priority(assignment) == {0: [7003], 1: [7000, 7001, 7002, 7004]}
