"""tulle.kube.mapping: Kubernetes objects to the registry's types (no server, no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from tulle.api.kubernetes import port_protocol, service_of
from tulle.api.model import ServicePort
from tulle.control.registry import endpoint_from_dict
from tulle.kube.mapping import (
    Cluster,
    endpoints_of,
    in_mesh,
    locality,
    pod_localities,
    pod_locality,
    registrations,
)


@pytest.mark.parametrize(
    ("port", "expected"),
    [
        ({"name": "http"}, "HTTP"),
        ({"name": "http-web"}, "HTTP"),
        ({"name": "HTTP-Web"}, "HTTP"),
        ({"name": "http2-api"}, "HTTP2"),
        ({"name": "grpc"}, "GRPC"),
        ({"name": "grpc-web"}, "GRPC"),
        ({"name": "tcp-db"}, "TCP"),
        ({"name": "tls-passthrough"}, "TCP"),
        ({"name": "https"}, "TCP"),
        ({"name": "mongo"}, "TCP"),
        ({"name": "redis-cache"}, "TCP"),
        ({"name": "mysql-primary"}, "TCP"),
        ({"name": "web"}, "TCP"),  # says nothing: opaque TCP (Istio would sniff)
        ({"name": "httpx"}, "TCP"),  # a prefix is the part before the first "-"
        ({}, "TCP"),
        ({"name": "http", "appProtocol": "grpc"}, "GRPC"),  # appProtocol first
        ({"name": "tcp", "appProtocol": "kubernetes.io/h2c"}, "HTTP2"),
        ({"name": "grpc", "appProtocol": "custom.example/x"}, "GRPC"),  # unknown: the name
        ({"name": "http", "protocol": "UDP"}, None),
        ({"name": "http", "protocol": "SCTP"}, None),
    ],
)
def test_port_protocol_as_istio_selects_it(port: dict[str, Any], expected: str | None) -> None:
    assert port_protocol(port) == expected


def _service(name: str = "web", ns: str = "shop", **spec: Any) -> dict[str, Any]:
    spec.setdefault("ports", [{"name": "http", "port": 80, "targetPort": 8080}])
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


def test_a_service_is_a_mesh_service_with_its_ports() -> None:
    service = service_of(
        _service(
            clusterIP="10.96.0.7",
            ports=[
                {"name": "grpc-api", "port": 9090, "targetPort": "grpc"},  # named: no number
                {"name": "http", "port": 80, "targetPort": 8080},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
        )
    )
    assert service is not None
    assert service.host == "web.shop.svc.cluster.local"
    assert service.namespace == "shop"
    assert service.ports == (
        ServicePort(80, "HTTP", "http", 8080),
        ServicePort(9090, "GRPC", "grpc-api", None),
    )
    assert service.addresses == ("10.96.0.7",)
    assert service_of(_service(clusterIP="None")).addresses == ()  # type: ignore[union-attr]
    assert service_of(_service(type="ExternalName", externalName="db.example.com")) is None


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    metadata = {"name": name, "namespace": "shop", "labels": {"app": "web", "version": "v1"}}
    metadata.update(spec.pop("metadata", {}))
    spec.setdefault("containers", [{"name": "app"}])
    return {"metadata": metadata, "spec": spec}


def test_in_mesh_means_a_tulle_proxy_sidecar_or_the_library_annotation() -> None:
    assert not in_mesh(_pod("p"))
    assert in_mesh(_pod("p", containers=[{"name": "app"}, {"name": "tulle-proxy"}]))
    native = _pod("p", initContainers=[{"name": "tulle-init"}, {"name": "tulle-proxy"}])
    assert in_mesh(native)
    assert in_mesh(_pod("p", metadata={"annotations": {"tulle.dev/mesh": "library"}}))
    assert not in_mesh(_pod("p", metadata={"annotations": {"tulle.dev/mesh": "sidecar"}}))


def test_locality_needs_the_nodes_region() -> None:
    node = {"metadata": {"labels": {"topology.kubernetes.io/region": "eu-1"}}}
    assert locality("eu-1a", node) == "eu-1/eu-1a"
    assert locality(None, node) == "eu-1"
    labelled = {
        "metadata": {
            "labels": {
                "topology.kubernetes.io/region": "eu-1",
                "topology.kubernetes.io/zone": "eu-1b",
                "topology.istio.io/subzone": "rack-4",
            }
        }
    }
    assert locality(None, labelled) == "eu-1/eu-1b/rack-4"
    assert locality("eu-1a", labelled) == "eu-1/eu-1a/rack-4"  # the slice's zone first
    assert locality("eu-1a", None) == ""
    assert locality("eu-1a", {"metadata": {"labels": {}}}) == ""


def test_a_pods_istio_locality_label_wins_over_its_node() -> None:
    node = {"metadata": {"labels": {"topology.kubernetes.io/region": "eu-1"}}}
    labelled = _pod("p", nodeName="n1", metadata={"labels": {"istio-locality": "us.us-2b.r7"}})
    assert pod_locality(labelled, "eu-1a", node) == "us/us-2b/r7"  # '.' separates the parts
    assert pod_locality(_pod("p"), "eu-1a", node) == "eu-1/eu-1a"
    slashed = _pod("p", metadata={"labels": {"istio-locality": "us/us-2b"}})
    assert pod_locality(slashed, None, None) == "us/us-2b"
    pods = [labelled, _pod("q", nodeName="n1"), _pod("r", nodeName="n9"), _pod("s")]
    assert pod_localities(pods, {"n1": node}) == {
        ("shop", "p"): "us/us-2b/r7",
        ("shop", "q"): "eu-1",
    }  # a pod on an unknown Node, or on none, has no known locality
    slice_ = _slice({**_endpoint("10.0.0.9", "web-9"), "zone": "eu-1a"})
    cluster = Cluster(
        services=CLUSTER.services,
        pods={
            ("shop", "web-9"): {**labelled, "metadata": {**labelled["metadata"], "name": "web-9"}}
        },
        nodes={"n1": node},
    )
    [found] = endpoints_of(slice_, cluster)
    assert found["locality"] == "us/us-2b/r7"


def _slice(*endpoints: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "web-x1",
            "namespace": "shop",
            "labels": {"kubernetes.io/service-name": fields.pop("service", "web")},
        },
        "addressType": fields.pop("addressType", "IPv4"),
        "ports": fields.pop("ports", [{"name": "http", "port": 8080}]),
        "endpoints": list(endpoints),
    }


def _endpoint(address: str, pod: str | None = None, **conditions: Any) -> dict[str, Any]:
    endpoint: dict[str, Any] = {"addresses": [address], "conditions": conditions}
    if pod:
        endpoint["targetRef"] = {"kind": "Pod", "name": pod, "namespace": "shop"}
    return endpoint


CLUSTER = Cluster(
    services={("shop", "web"): _service()},
    pods={
        ("shop", "web-1"): _pod("web-1", serviceAccountName="web", nodeName="n1"),
        ("shop", "web-2"): _pod("web-2", metadata={"annotations": {"tulle.dev/mesh": "library"}}),
    },
    nodes={"n1": {"metadata": {"labels": {"topology.kubernetes.io/region": "eu-1"}}}},
)


@pytest.mark.parametrize(
    ("conditions", "healthy"),
    [
        ({}, True),  # unset ready reads as ready; unset terminating as not
        ({"ready": True, "serving": True, "terminating": False}, True),
        ({"ready": False, "serving": False, "terminating": False}, False),  # not ready yet
        ({"ready": False, "serving": True, "terminating": True}, False),  # draining
        ({"ready": False, "serving": False, "terminating": True}, False),
        ({"terminating": True}, False),
    ],
)
def test_only_ready_and_not_terminating_endpoints_are_healthy(
    conditions: dict[str, Any], healthy: bool
) -> None:
    [found] = endpoints_of(_slice(_endpoint("10.0.0.1", **conditions)), CLUSTER)
    assert found["healthy"] is healthy


def test_an_endpoint_takes_the_pods_labels_identity_and_mesh_mode() -> None:
    slice_ = _slice(
        {**_endpoint("10.0.0.1", "web-1"), "zone": "eu-1a"},
        _endpoint("10.0.0.2", "web-2"),
        _endpoint("10.0.0.3"),  # no Pod behind it (a selector-less Service's own slice)
    )
    found = {e["address"]: e for e in endpoints_of(slice_, CLUSTER)}
    assert found["10.0.0.1"] == {
        "service": "web.shop.svc.cluster.local",
        "namespace": "shop",
        "address": "10.0.0.1",
        "port": 8080,
        "servicePort": 80,
        "protocol": "HTTP",
        "labels": {"app": "web", "version": "v1"},
        "serviceAccount": "web",
        "locality": "eu-1/eu-1a",  # the slice's zone, the pod's Node's region
        "healthy": True,
        "workload": "web-1",
    }
    assert found["10.0.0.2"]["labels"]["security.istio.io/tlsMode"] == "istio"
    assert found["10.0.0.2"]["serviceAccount"] == "default"
    assert found["10.0.0.3"]["labels"] == {}
    assert found["10.0.0.3"]["workload"] == ""
    # The control plane accepts each as it accepts a registration over its API.
    endpoint = endpoint_from_dict(found["10.0.0.1"])
    assert (endpoint.service, endpoint.service_port, endpoint.locality) == (
        "web.shop.svc.cluster.local", 80, "eu-1/eu-1a",
    )  # fmt: skip
    assert dict(endpoint.labels) == {"app": "web", "version": "v1"}


def test_slices_the_mesh_cannot_use_give_no_endpoints() -> None:
    one = _endpoint("10.0.0.1")
    assert endpoints_of(_slice(one, service="unknown"), CLUSTER) == []
    assert endpoints_of(_slice(one, addressType="FQDN"), CLUSTER) == []
    # A port the Service does not have (by name) is not one of its ports.
    assert endpoints_of(_slice(one, ports=[{"name": "metrics", "port": 9100}]), CLUSTER) == []
    unnamed = Cluster(services={("shop", "web"): _service(ports=[{"port": 80}])})
    [found] = endpoints_of(_slice(one, ports=[{"port": 8080}]), unnamed)
    assert (found["port"], found["servicePort"], found["protocol"]) == (8080, 80, "TCP")


def test_an_address_in_two_slices_counts_once_healthy_if_either_says_so() -> None:
    old = _slice(_endpoint("10.0.0.1", ready=False, terminating=True), _endpoint("10.0.0.2"))
    new = _slice(_endpoint("10.0.0.1", ready=True))
    found = registrations([old, new], CLUSTER)
    assert sorted((e["address"], e["healthy"]) for e in found) == [
        ("10.0.0.1", True),
        ("10.0.0.2", True),
    ]


def test_an_unchanged_slice_keeps_its_registrations_and_a_changed_pod_remaps_its_slice() -> None:
    from tulle.kube.registry import KubeRegistry

    registry = KubeRegistry(source=None, on_update=lambda update: None)  # type: ignore[arg-type]
    service = {
        **_service(),
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "1"},
    }
    pods = {
        ("shop", f"web-{i}"): {**_pod(f"web-{i}"), "metadata": {
            "name": f"web-{i}", "namespace": "shop", "resourceVersion": "2", "labels": {"v": "1"}}}
        for i in (1, 2)
    }  # fmt: skip
    slices = {}
    for i in (1, 2):
        slice_ = _slice(_endpoint(f"10.0.0.{i}", f"web-{i}"))
        slice_["metadata"] = {**slice_["metadata"], "name": f"web-{i}", "resourceVersion": "3"}
        slices[("shop", f"web-{i}")] = slice_
    registry.watchers["Service"].objects = {("shop", "web"): service}
    registry.watchers["Pod"].objects = pods
    registry.watchers["EndpointSlice"].objects = slices
    first = {r["address"]: r for r in registry.update().registrations}
    again = {r["address"]: r for r in registry.update().registrations}
    assert all(again[a] is first[a] for a in first)  # the same objects: nothing re-checked
    changed = {**pods[("shop", "web-2")]}
    changed["metadata"] = {**changed["metadata"], "resourceVersion": "9", "labels": {"v": "2"}}
    registry.watchers["Pod"].objects = {**pods, ("shop", "web-2"): changed}
    third = {r["address"]: r for r in registry.update().registrations}
    assert third["10.0.0.1"] is first["10.0.0.1"]
    assert third["10.0.0.2"] is not first["10.0.0.2"]
    assert third["10.0.0.2"]["labels"] == {"v": "2"}


def test_the_registry_says_where_each_mesh_pod_runs() -> None:
    from tulle.kube.registry import KubeRegistry

    registry = KubeRegistry(source=None, on_update=lambda update: None)  # type: ignore[arg-type]
    sidecar = [{"name": "app"}, {"name": "tulle-proxy"}]
    registry.watchers["Pod"].objects = {
        ("shop", "web-1"): _pod("web-1", nodeName="n1", containers=sidecar),
        ("shop", "web-2"): _pod("web-2", nodeName="n1"),  # not in the mesh
    }
    registry.watchers["Node"].objects = {
        ("", "n1"): {
            "metadata": {
                "name": "n1",
                "labels": {
                    "topology.kubernetes.io/region": "eu-1",
                    "topology.kubernetes.io/zone": "eu-1b",
                },
            }
        }
    }
    assert registry.update().localities == {("shop", "web-1"): "eu-1/eu-1b"}
