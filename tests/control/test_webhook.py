"""The admission webhooks of a real ``tulle controlplane --webhook-port`` process, called over
HTTPS as the API server calls them: the certificate checked against the mesh root for the
Service names the webhook configurations use, AdmissionReview v1 requests shaped as the API
server sends them (a Deployment's pod: ``generateName`` and no name, ownerReferences, the
fields the API server defaults and the service-account volume its admission plugin added,
``userInfo`` of the ReplicaSet controller, ``options``, ``dryRun``; after the example of
https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/).

The injection patch, applied with ``jsonpatch`` to the pod, equals what the real ``tulle
inject`` prints for that pod with the same settings; the validation refusal carries the lines
the real ``tulle validate`` prints for the same resource."""

from __future__ import annotations

import base64
import copy
import json
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonpatch
import pytest
import yaml

from tests.e2e.conftest import BIN, ControlPlane, _stop, start_control_plane

NAMESPACE = "tulle-system"  # the control plane's own
SETTINGS = ("image=registry.example/tulle:9.9", "proxy_uid=1337", "log_level=info")
SERVICE_NAMES = (
    f"tulle-controlplane.{NAMESPACE}.svc",
    f"tulle-controlplane.{NAMESPACE}.svc.cluster.local",
)


@dataclass
class Webhook:
    """The control plane and its webhook port, and an HTTPS client trusting the mesh root."""

    plane: ControlPlane
    port: int
    root: Path

    def post(self, path: str, body: Any, name: str = SERVICE_NAMES[0]) -> httpx.Response:
        """POST ``body`` (JSON, or bytes as they are) to ``path``, checking the certificate
        for the Service name ``name``, as the API server does."""
        context = ssl.create_default_context(cafile=str(self.root))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        with httpx.Client(verify=context, timeout=30) as client:
            return client.post(
                f"https://127.0.0.1:{self.port}{path}",
                content=content,
                headers={"content-type": "application/json"},
                extensions={"sni_hostname": name},
            )

    def review(self, path: str, request: dict[str, Any]) -> dict[str, Any]:
        """The ``response`` of an AdmissionReview with ``request``; its uid checked."""
        answer = self.post(path, {"apiVersion": "admission.k8s.io/v1",
                                  "kind": "AdmissionReview", "request": request})  # fmt: skip
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["apiVersion"] == "admission.k8s.io/v1"
        assert body["kind"] == "AdmissionReview"
        assert body["response"]["uid"] == request["uid"]
        response: dict[str, Any] = body["response"]
        return response


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    root = tmp_path_factory.mktemp("webhook")
    config = root / "config"
    config.mkdir()
    extra: tuple[str, ...] = ("--webhook-port", "0", "--namespace", NAMESPACE)
    extra += tuple(item for setting in SETTINGS for item in ("--inject-set", setting))
    plane = start_control_plane(root / "state", config, extra=extra)
    try:
        assert plane.proc.stdout is not None
        line = plane.proc.stdout.readline()  # "tulle controlplane: webhooks on https://H:P"
        assert line.startswith("tulle controlplane: webhooks on https://127.0.0.1:"), line
        yield Webhook(plane, int(line.rsplit(":", 1)[1]), root / "state" / "root-cert.pem")
    finally:
        _stop(plane.proc)


def deployment_pod(namespace: str = "shop", **labels: str) -> dict[str, Any]:
    """A pod as the API server has it when the ReplicaSet controller creates it: no name yet,
    defaults filled in, the service-account token volume added."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": "reviews-v1-7d4b9c8f5d-",
            "namespace": namespace,
            "creationTimestamp": None,
            "labels": {"app": "reviews", "version": "v1", "pod-template-hash": "7d4b9c8f5d",
                       **labels},
            "annotations": {"prometheus.io/scrape": "true"},
            "ownerReferences": [{
                "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "reviews-v1-7d4b9c8f5d",
                "uid": "6c1f2b7e-3d0a-4f1e-9a53-8c2d4b1e0f77", "controller": True,
                "blockOwnerDeletion": True,
            }],
            "managedFields": [{
                "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-12-06T04:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {"f:generateName": {}}},
            }],
        },
        "spec": {
            "volumes": [{
                "name": "kube-api-access-5x8qz",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                        {"configMap": {"name": "kube-root-ca.crt",
                                       "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                            "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                    ],
                    "defaultMode": 420,
                },
            }],
            "containers": [{
                "name": "reviews",
                "image": "docker.io/istio/examples-bookinfo-reviews-v1:1.20.1",
                "ports": [{"name": "http", "containerPort": 9080, "protocol": "TCP"}],
                "resources": {},
                "readinessProbe": {
                    "httpGet": {"path": "/health", "port": 9080, "scheme": "HTTP"},
                    "timeoutSeconds": 1, "periodSeconds": 10, "successThreshold": 1,
                    "failureThreshold": 3,
                },
                "volumeMounts": [{"name": "kube-api-access-5x8qz", "readOnly": True,
                                  "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent",
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "bookinfo-reviews",
            "serviceAccount": "bookinfo-reviews",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                 "effect": "NoExecute", "tolerationSeconds": 300},
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {},
    }  # fmt: skip


def create_request(obj: dict[str, Any], namespace: str, **overrides: Any) -> dict[str, Any]:
    """``request`` of the AdmissionReview the API server sends for creating ``obj`` (a Pod
    unless ``overrides`` say otherwise), by the ReplicaSet controller."""
    request = {
        "uid": str(uuid.uuid4()),
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": namespace,
        "operation": "CREATE",
        "userInfo": {
            "username": "system:serviceaccount:kube-system:replicaset-controller",
            "uid": "2f1ab2c3-6a35-4c2d-8e4b-5a7d9c1e0b11",
            "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system",
                       "system:authenticated"],
        },
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }  # fmt: skip
    request.update(overrides)
    return request


def tulle(*args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tulle"), *args], input=stdin, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


def tulle_inject(obj: dict[str, Any]) -> dict[str, Any]:
    """What the real ``tulle inject`` prints for ``obj``, with the webhook's settings."""
    sets = [item for setting in SETTINGS for item in ("--set", setting)]
    result = tulle("inject", "-f", "-", *sets, stdin=yaml.safe_dump(obj))
    assert result.returncode == 0, result.stderr
    injected: dict[str, Any] = yaml.safe_load(result.stdout)
    return injected


def patched(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(response["patch"]))
    result: dict[str, Any] = jsonpatch.apply_patch(obj, patch)
    return result


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_deployment_pod_gets_tulle_injects_output(webhook: Webhook, name: str) -> None:
    pod = deployment_pod()
    request = create_request(pod, "shop")
    answer = webhook.post("/inject", {"apiVersion": "admission.k8s.io/v1",
                                      "kind": "AdmissionReview", "request": request}, name)  # fmt: skip
    assert answer.status_code == 200, answer.text
    response = answer.json()["response"]
    assert response["uid"] == request["uid"]
    assert response["allowed"] is True
    result = patched(pod, response)
    expected = tulle_inject(pod)
    assert result == expected
    names = [c["name"] for c in result["spec"]["initContainers"]]
    assert names == ["tulle-init", "tulle-proxy"]
    assert result["spec"]["initContainers"][1]["image"] == "registry.example/tulle:9.9"
    assert "name" not in result["metadata"]  # the API server names it after admission


def test_dry_run_and_a_namespace_only_in_the_request(webhook: Webhook) -> None:
    pod = deployment_pod()
    del pod["metadata"]["namespace"]
    response = webhook.review("/inject", create_request(pod, "shop", dryRun=True))
    assert response["allowed"] is True
    assert patched(pod, response) == tulle_inject(pod)


@pytest.mark.parametrize("namespace", ["kube-system", NAMESPACE])
def test_excluded_namespaces_untouched(webhook: Webhook, namespace: str) -> None:
    response = webhook.review("/inject", create_request(deployment_pod(namespace), namespace))
    assert response["allowed"] is True
    assert "patch" not in response
    assert "patchType" not in response
    assert f"namespace {namespace}" in response["status"]["message"]
    assert "never injects" in response["status"]["message"]
    assert response["warnings"] == [response["status"]["message"]]


def test_opted_out_and_injected_pods_untouched(webhook: Webhook) -> None:
    opted_out = deployment_pod(**{"sidecar.tulle.dev/inject": "false"})
    response = webhook.review("/inject", create_request(opted_out, "shop"))
    assert response["allowed"] is True
    assert "patch" not in response
    assert "not injected" in response["status"]["message"]
    assert "sidecar.tulle.dev/inject" in response["status"]["message"]

    injected = tulle_inject(deployment_pod())
    response = webhook.review("/inject", create_request(injected, "shop"))
    assert response["allowed"] is True
    assert "patch" not in response
    assert "already carries the sidecar" in response["status"]["message"]


def test_a_pod_that_cannot_be_injected_is_refused_with_the_field(webhook: Webhook) -> None:
    pod = deployment_pod()
    pod["spec"]["volumes"].append({"name": "tulle-token", "emptyDir": {}})
    response = webhook.review("/inject", create_request(pod, "shop"))
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert response["status"]["code"] == 400
    assert "Pod shop/reviews-v1-7d4b9c8f5d-" in message
    assert "spec.volumes: a volume is already named 'tulle-token'" in message
    assert 'sidecar.tulle.dev/inject: "false"' in message  # what to do about it
    assert "patch" not in response


def test_not_a_pod_creation_is_allowed_unchanged(webhook: Webhook) -> None:
    pod = deployment_pod()
    response = webhook.review("/inject", create_request(pod, "shop", operation="UPDATE"))
    assert response["allowed"] is True
    assert "patch" not in response
    assert "only handles Pod creation" in response["status"]["message"]


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                     "request": {"uid": "x"}}).encode(), "expected apiVersion"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                     "request": {"kind": {"kind": "Pod"}}}).encode(), "request.uid"),
        (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
         "request: missing"),
    ],
)  # fmt: skip
def test_malformed_bodies_are_400(webhook: Webhook, body: bytes, complaint: str) -> None:
    for path in ("/inject", "/validate"):
        answer = webhook.post(path, body)
        assert answer.status_code == 400
        assert complaint in answer.json()["error"]
        assert "Traceback" not in answer.text


def test_methods_and_paths(webhook: Webhook) -> None:
    context = ssl.create_default_context(cafile=str(webhook.root))
    with httpx.Client(verify=context, timeout=30) as client:
        base = f"https://127.0.0.1:{webhook.port}"
        assert client.get(f"{base}/inject").status_code == 405
        assert client.post(f"{base}/mutate", content=b"{}").status_code == 404
        assert client.get(f"{base}/healthz").text == "ok\n"


def test_certificate_is_refused_without_the_mesh_root(webhook: Webhook) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.post(f"https://127.0.0.1:{webhook.port}/inject", content=b"{}", timeout=30)
    with pytest.raises(httpx.ConnectError, match="Hostname mismatch"):
        webhook.post("/inject", b"{}", name="tulle-controlplane.other.svc")


BROKEN_VS: dict[str, Any] = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "VirtualService",
    "metadata": {"name": "reviews", "namespace": "shop"},
    "spec": {
        "hosts": ["reviews"],
        "http": [{
            "route": [{"destination": {"host": "reviews", "subset": "v1"}, "weight": 0},
                      {"destination": {"host": "reviews", "subset": "v2"}, "weight": 0}],
            "timeout": "5 seconds",
        }],
    },
}  # fmt: skip


def config_request(obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    """``request`` of the AdmissionReview for ``kubectl apply`` of a config resource."""
    group, _, version = obj["apiVersion"].rpartition("/")
    metadata = obj["metadata"]
    stored = copy.deepcopy(obj)
    stored["metadata"].update(uid=str(uuid.uuid4()), generation=1,
                              creationTimestamp="2026-12-06T04:00:00Z")  # fmt: skip
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    gvr = {"group": group, "version": version, "resource": obj["kind"].lower() + "s"}
    return {
        "uid": str(uuid.uuid4()),
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": metadata["name"],
        "namespace": metadata["namespace"],
        "operation": operation,
        "userInfo": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins",
                                                                "system:authenticated"]},
        "object": None if operation == "DELETE" else stored,
        "oldObject": stored if operation != "CREATE" else None,
        "dryRun": False,
        "options": {"kind": f"{operation.title()}Options", "apiVersion": "meta.k8s.io/v1",
                    "fieldManager": "kubectl-client-side-apply"},
    }  # fmt: skip


def tulle_validate(obj: dict[str, Any], tmp_path: Path) -> tuple[int, list[str]]:
    """The real ``tulle validate --strict-hosts`` (the control plane's registry is the whole
    mesh's: an undefined host is an error there): exit status, and its lines without
    ``FILE:LINE:``."""
    path = tmp_path / "resource.yaml"
    path.write_text(yaml.safe_dump(obj, sort_keys=False))
    result = subprocess.run(
        [str(BIN / "tulle"), "validate", "--strict-hosts", str(path)], capture_output=True,
        text=True, timeout=120, check=False,
    )  # fmt: skip
    return result.returncode, [line.split(": ", 1)[1] for line in result.stdout.splitlines()]


def test_a_broken_virtual_service_is_refused_with_tulle_validates_findings(
    webhook: Webhook, tmp_path: Path
) -> None:
    status, lines = tulle_validate(BROKEN_VS, tmp_path)
    assert status == 1
    assert lines
    assert all(line.startswith("ERROR VirtualService shop/reviews: ") for line in lines)
    for operation in ("CREATE", "UPDATE"):
        response = webhook.review("/validate", config_request(BROKEN_VS, operation))
        assert response["allowed"] is False
        assert response["status"]["code"] == 422
        message = response["status"]["message"]
        head, *found = message.splitlines()
        assert head == "VirtualService shop/reviews: tulle validate found 1 error:"
        assert found == lines
        assert "invalid duration '5 seconds'" in message


def test_a_virtual_service_whose_references_are_missing_is_admitted_with_warnings(
    webhook: Webhook, tmp_path: Path
) -> None:
    """Its host and subsets are defined by resources it does not carry (a ServiceEntry, a
    DestinationRule applied after it): tulle validate of it alone says so, as errors; the
    webhook admits it and passes those lines on as warnings."""
    good = copy.deepcopy(BROKEN_VS)
    good["spec"]["http"][0]["timeout"] = "5s"
    good["spec"]["http"][0]["route"][1]["weight"] = 30
    status, lines = tulle_validate(good, tmp_path)
    assert status == 1
    assert any("host reviews (reviews.shop.svc.cluster.local) is not defined" in line
               for line in lines)  # fmt: skip
    response = webhook.review("/validate", config_request(good))
    assert response["allowed"] is True
    assert response["status"]["message"] == "VirtualService shop/reviews: valid"
    assert response["warnings"] == [
        f"{line} (admitted: another resource may define it)" for line in lines
    ]


def test_an_error_within_the_resource_refuses_beside_admitted_references(
    webhook: Webhook, tmp_path: Path
) -> None:
    """Weights that add up to 0 are wrong whatever else exists: refused with that line; the
    undefined host goes on as a warning."""
    bad = copy.deepcopy(BROKEN_VS)
    bad["spec"]["http"][0]["timeout"] = "5s"
    status, lines = tulle_validate(bad, tmp_path)
    assert status == 1
    weights = [line for line in lines if "weights add up to 0" in line]
    assert len(weights) == 1
    response = webhook.review("/validate", config_request(bad))
    assert response["allowed"] is False
    message = response["status"]["message"].splitlines()
    assert message == ["VirtualService shop/reviews: tulle validate found 1 error:", *weights]
    assert response["warnings"] == [
        f"{line} (admitted: another resource may define it)"
        for line in lines
        if line not in weights
    ]
    assert response["warnings"]


def test_delete_and_unknown_kinds_are_allowed(webhook: Webhook) -> None:
    response = webhook.review("/validate", config_request(BROKEN_VS, "DELETE"))
    assert response["allowed"] is True
    widget = {"apiVersion": "example.com/v1", "kind": "Widget",
              "metadata": {"name": "w", "namespace": "shop"}, "spec": {"size": "huge"}}  # fmt: skip
    response = webhook.review("/validate", config_request(widget))
    assert response["allowed"] is True
    assert "Tulle does not know example.com/v1 Widget" in response["warnings"][0]


@pytest.mark.parametrize(
    ("args", "complaint"),
    [
        (("--webhook-port", "0", "--inject-set", "proxy_uid=0"),
         "error: --inject-set: proxy_uid: 0 is root"),
        (("--webhook-port", "0", "--inject-set", "imagex=y"), "error: --inject-set: imagex: no such"),
        (("--webhook-port", "0", "--namespace", "Tulle_System"), "error: --namespace: 'Tulle_System'"),
        (("--inject-set", "image=x"), "error: --inject-set goes with --webhook-port"),
    ],
)  # fmt: skip
def test_bad_webhook_options_stop_the_start(
    args: tuple[str, ...], complaint: str, tmp_path: Path
) -> None:
    result = subprocess.run(
        [str(BIN / "tulle"), "controlplane", "--state-dir", str(tmp_path), *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert complaint in result.stderr
