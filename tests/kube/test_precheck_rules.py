"""The pre-flight's rules (tulle.kube.precheck, tulle.cli.cluster_check) on objects shaped as
the API server returns them, without a cluster: version strings of real distributions, an
EndpointSlice endpoint without conditions, a webhook by URL, and the restart command for each
kind of owner."""

from __future__ import annotations

from typing import Any

import pytest

from tulle.cli.cluster_check import pod_findings
from tulle.kube.cluster import ClusterError, service_proxy_path
from tulle.kube.precheck import (
    WebhookService,
    crd_findings,
    deployment_finding,
    expected_crds,
    precheck,
    ready_endpoints,
    version_finding,
    webhook_findings,
)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ({"major": "1", "minor": "29", "gitVersion": "v1.29.0"}, False),
        ({"major": "1", "minor": "30+", "gitVersion": "v1.30.4-eks-a737599"}, False),
        ({"major": "1", "minor": "28+", "gitVersion": "v1.28.15-gke.1020000"}, True),
        ({"major": "1", "minor": "27+"}, True),
        ({"major": "1", "minor": "33"}, False),
    ],
)
def test_kubernetes_versions(version: dict[str, str], problem: bool) -> None:
    assert version_finding(version).problem is problem


def test_an_unreadable_version_is_a_problem_that_says_so() -> None:
    finding = version_finding({"gitVersion": "nightly"})
    assert finding.problem
    assert finding.message == "cannot read the version 'nightly'"


def test_missing_crds_are_named_and_the_gateway_apis_are_optional() -> None:
    needed, optional = expected_crds()
    assert "virtualservices.networking.istio.io" in needed
    assert "meshes.tulle.dev" in needed
    assert optional == [
        "httproutes.gateway.networking.k8s.io",
        "grpcroutes.gateway.networking.k8s.io",
    ]
    all_there = crd_findings(needed + optional)
    assert [f.problem for f in all_there] == [False]
    missing = crd_findings([n for n in needed if n != "meshes.tulle.dev"])
    assert missing[0].problem
    assert missing[0].message.startswith("missing CRDs: meshes.tulle.dev (")
    assert not missing[1].problem
    assert "httproutes.gateway.networking.k8s.io" in missing[1].message


def test_a_deployment_short_of_replicas_is_a_problem() -> None:
    deployment: dict[str, Any] = {"spec": {"replicas": 2}, "status": {"availableReplicas": 1}}
    assert deployment_finding(deployment, "tulle-system").problem
    deployment["status"]["availableReplicas"] = 2
    assert not deployment_finding(deployment, "tulle-system").problem
    assert deployment_finding(None, "tulle-system").problem


def test_endpoints_without_a_ready_condition_count_as_ready() -> None:
    slices: list[dict[str, Any]] = [
        {
            "endpoints": [
                {"addresses": ["10.0.0.1"]},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": False}},
            ]
        },
        {"endpoints": [{"addresses": ["10.0.0.3"], "conditions": {"ready": True}}]},
    ]
    assert ready_endpoints(slices) == 2


def test_webhooks() -> None:
    service = {"namespace": "tulle-system", "name": "tulle-controlplane", "port": 443}
    config = {
        "webhooks": [
            {"name": "inject.tulle.dev", "clientConfig": {"service": service, "caBundle": "Zm9v"}},
            {"name": "by-url.tulle.dev", "clientConfig": {"url": "https://hook.example/x"}},
        ]
    }
    ready = {("tulle-system", "tulle-controlplane"): WebhookService(
        "tulle-system", "tulle-controlplane", True, 2)}  # fmt: skip
    found = webhook_findings("MutatingWebhookConfiguration", "inj", config, ready)
    assert [f.problem for f in found] == [False, True, False]
    assert "by-url.tulle.dev has no caBundle" in found[1].message
    assert found[2].message.endswith("calls https://hook.example/x (not checked)")
    down = {key: WebhookService(*key, True, 0) for key in ready}
    assert "no ready endpoint" in webhook_findings("M", "inj", config, down)[0].message
    assert webhook_findings("M", "inj", None, ready)[0].problem


def pod(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", **metadata},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]},
        "status": {"phase": "Running"},
    }


def test_each_pod_not_injected_gets_the_command_that_restarts_it() -> None:
    owned = [{"kind": "StatefulSet", "name": "db"}]
    pods = {
        "shop": [
            pod("db-0", ownerReferences=owned),
            pod("debug"),
            {**pod("done"), "status": {"phase": "Succeeded"}},
            pod("out", annotations={"sidecar.tulle.dev/inject": "false"}),
        ]
    }
    found = [f.message for f in pod_findings(pods, "tulle-system")]
    assert len(found) == 2
    assert found[0].endswith("restart it: kubectl -n shop rollout restart statefulset db")
    assert found[1].endswith("restart it: kubectl -n shop delete pod debug (and create it again)")


def test_the_control_planes_namespace_is_never_judged() -> None:
    assert pod_findings({"tulle-system": [pod("x")]}, "tulle-system")[0].problem is False


def test_the_service_proxy_path() -> None:
    assert service_proxy_path("tulle-system", "tulle-controlplane", "http-api", "/healthz") == (
        "/api/v1/namespaces/tulle-system/services/http:tulle-controlplane:http-api/proxy/healthz"
    )
    with pytest.raises(ValueError, match="a path starts with /"):
        service_proxy_path("ns", "svc", "http", "healthz")


class RefusingCluster:
    """A cluster whose user may read the version and namespaces but not CRDs (403)."""

    where = "context test"

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        if path == "/version":
            return {"major": "1", "minor": "31", "gitVersion": "v1.31.0"}
        return None

    def items(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        if "customresourcedefinitions" in path:
            raise ClusterError(f"GET {path}: HTTP 403: customresourcedefinitions is forbidden")
        return []


class DownProxy:
    namespace = "tulle-system"
    where = "Service tulle-system/tulle-controlplane"

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise ClusterError("cannot reach the API server")


def test_a_check_the_user_may_not_read_is_a_warning_and_the_others_run() -> None:
    found = precheck(RefusingCluster(), DownProxy())  # type: ignore[arg-type]
    by_topic = {f.topic: f for f in found.findings}
    assert by_topic["crds"].problem
    assert by_topic["crds"].message == (
        "cannot check: GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions: HTTP 403: "
        "customresourcedefinitions is forbidden"
    )
    assert not by_topic["kubernetes"].problem
    assert by_topic["control-plane"].problem  # no Deployment
    assert by_topic["reachable"].problem
    assert not found.reachable
    assert by_topic["injection"].message.startswith("no namespace is labelled")
