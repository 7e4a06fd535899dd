"""Pods in the mesh become workloads (tulle.kube.workloads), and a pod's proxy gets the inbound
side of its workload from the translator: the ports its Services target, the policies that
select its labels."""

from __future__ import annotations

from typing import Any

from tulle.api.model import WorkloadPort
from tulle.api.normalize import build_model
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import view_of
from tulle.control.translate.context import own_workload
from tulle.kube.mapping import owner_names
from tulle.kube.workloads import mesh_workloads, pod_ports
from tulle.xds.node import parse_node_id


def pod(name: str, labels: dict[str, str], *, owner: tuple[str, str] | None = None,
        sidecar: bool = True, annotations: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None, account: str = "web") -> dict[str, Any]:  # fmt: skip
    metadata: dict[str, Any] = {"name": name, "namespace": "shop", "labels": labels}
    if owner is not None:
        metadata["ownerReferences"] = [
            {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "controller": True,
             "uid": "u"},
        ]  # fmt: skip
    if annotations:
        metadata["annotations"] = annotations
    containers: list[dict[str, Any]] = [{"name": "app", "image": "a", "ports": ports or []}]
    spec: dict[str, Any] = {"serviceAccountName": account, "containers": containers}
    if sidecar:
        spec["initContainers"] = [{"name": "tulle-proxy", "image": "t", "restartPolicy": "Always"}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def service(name: str, selector: dict[str, str], ports: list[dict[str, Any]],
            namespace: str = "shop") -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"selector": selector, "ports": ports},
    }  # fmt: skip


WEB = service("web", {"app": "web"}, [
    {"name": "http", "port": 80, "targetPort": "http"},
    {"name": "grpc-admin", "port": 9000, "targetPort": 9090},
])  # fmt: skip
NAMED = [{"name": "http", "containerPort": 8080}]


def test_owner_names_prefer_the_deployment_then_the_owner_then_the_pod() -> None:
    rs_pod = pod("web-5d8f-x2k4q", {"app": "web", "pod-template-hash": "5d8f"},
                 owner=("ReplicaSet", "web-5d8f"))  # fmt: skip
    assert owner_names(rs_pod) == ["web", "web-5d8f", "web-5d8f-x2k4q"]
    assert owner_names(pod("db-0", {"app": "db"}, owner=("StatefulSet", "db"))) == ["db", "db-0"]
    assert owner_names(pod("solo", {"app": "solo"})) == ["solo"]


def test_a_pod_serves_its_services_target_ports_with_their_protocols() -> None:
    other_namespace = service("web", {"app": "web"}, [{"name": "tcp", "port": 1}], "elsewhere")
    not_selecting = service("db", {"app": "db"}, [{"name": "tcp", "port": 5432}])
    ports, host = pod_ports(
        pod("w", {"app": "web"}, ports=NAMED), [WEB, other_namespace, not_selecting]
    )
    assert ports == (WorkloadPort("http", 8080, "HTTP"), WorkloadPort("grpc-admin", 9090, "GRPC"))
    assert host == "web.shop.svc.cluster.local"
    # No Service selects it: its containers' named ports, protocol from the name.
    alone = pod("w", {"app": "alone"}, ports=[*NAMED, {"name": "metrics", "containerPort": 9}])
    assert pod_ports(alone, [WEB]) == ((WorkloadPort("metrics", 9, "TCP"),
                                        WorkloadPort("http", 8080, "HTTP")), "")  # fmt: skip


def test_replicas_share_a_workload_and_a_rollout_splits_it() -> None:
    def replica(name: str, template: str) -> dict[str, Any]:
        labels = {"app": "web", "pod-template-hash": template}
        return pod(name, labels, owner=("ReplicaSet", f"web-{template}"), ports=NAMED)

    pods = [replica("web-aaa-1", "aaa"), replica("web-aaa-2", "aaa"), replica("web-bbb-1", "bbb"),
            pod("plain", {"app": "web"}, sidecar=False, ports=NAMED),
            pod("lib", {"app": "lib"}, annotations={"tulle.dev/mesh": "library"})]  # fmt: skip
    found = mesh_workloads(pods, [WEB])
    assert found.pods == {
        ("shop", "web-aaa-1"): "web",
        ("shop", "web-aaa-2"): "web",
        ("shop", "web-bbb-1"): "web-bbb",  # another template: labels differ
        ("shop", "lib"): "lib",
    }
    web = found.workloads[("shop", "web")]
    assert (web.replicas, web.mesh, web.service_account) == (2, "sidecar", "web")
    assert dict(web.labels)["pod-template-hash"] == "aaa"
    assert dict(found.workloads[("shop", "web-bbb")].labels)["pod-template-hash"] == "bbb"
    assert found.workloads[("shop", "lib")].mesh == "library"


def test_a_pods_proxy_gets_its_workloads_inbound_side() -> None:
    pods = [pod("web-aaa-1", {"app": "web", "pod-template-hash": "aaa"},
                owner=("ReplicaSet", "web-aaa"), ports=NAMED)]  # fmt: skip
    found = mesh_workloads(pods, [WEB])
    snapshot = build_snapshot(1, build_model(()), (), (), found.workloads, found.pods)
    node = parse_node_id("sidecar~10.1.0.5~web-aaa-1.shop~shop.svc.cluster.local")
    view = view_of(snapshot, node)
    assert view.workload == "web"
    assert ("app", "web") in view.labels
    workload = own_workload(snapshot, view)
    assert workload is not None
    assert [p.port for p in workload.ports] == [8080, 9090]
    # A pod the cluster does not have in the mesh gets no inbound side.
    stranger = view_of(snapshot, parse_node_id("sidecar~10.1.0.6~x-1.shop~shop.svc.cluster.local"))
    assert own_workload(snapshot, stranger) is None
