"""The test API server itself: what kubectl and lightkube rely on works against it."""

from __future__ import annotations

import json

from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi


def test_kubectl_creates_lists_by_label_and_deletes_namespaces(kube_env):
    manifest = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kmock-a"}}
    labelled = {**manifest, "metadata": {"name": "kmock-b", "labels": {"team": "b"}}}
    stdin = json.dumps({"apiVersion": "v1", "kind": "List", "items": [manifest, labelled]})
    out = kubectl(kube_env, "apply", "--validate=false", "-f", "-", stdin=stdin)
    assert "namespace/kmock-a created" in out
    assert "namespace/kmock-b created" in out
    names = kubectl(kube_env, "get", "ns", "-l", "team=b", "-o", "name")
    assert names.split() == ["namespace/kmock-b"]
    kubectl(kube_env, "delete", "ns", "kmock-a", "kmock-b")
    assert "kmock-" not in kubectl(kube_env, "get", "ns", "-o", "name")


def test_server_side_apply_creates_then_updates_and_status_is_patchable(kube_api: KubeApi):
    from lightkube import Client, KubeConfig

    with Client(KubeConfig.from_file(kube_api.kubeconfig), field_manager="test") as client:
        apply_and_delete(client, kube_api)


def apply_and_delete(client, kube_api: KubeApi) -> None:
    from lightkube.resources.core_v1 import ConfigMap

    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": "kmock-ssa"},
        "data": {"a": "1"},
    }
    created = client.apply(ConfigMap.from_dict(body))
    assert created.metadata is not None
    assert created.metadata.uid
    body["data"] = {"a": "2"}
    client.apply(ConfigMap.from_dict(body))
    assert client.get(ConfigMap, "ssa", namespace="kmock-ssa").data == {"a": "2"}
    client.delete(ConfigMap, "ssa", namespace="kmock-ssa")
    assert kube_api.objects("v1/configmaps", "kmock-ssa") == []


def test_a_deployments_status_is_written_through_its_subresource(kube_env, kube_api: KubeApi):
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "kmock-status"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {}},
    }
    kubectl(kube_env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(deployment))
    kubectl(
        kube_env,
        "patch",
        "deployment",
        "web",
        "-n",
        "kmock-status",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"availableReplicas": 1}}',
    )
    [stored] = kube_api.objects("apps/v1/deployments", "kmock-status")
    assert stored["status"] == {"availableReplicas": 1}
    assert stored["spec"]["selector"] == {"matchLabels": {"app": "web"}}
    kubectl(kube_env, "delete", "deployment", "web", "-n", "kmock-status")
