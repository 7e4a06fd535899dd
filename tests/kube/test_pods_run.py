"""Injected pods run (issue 18): Deployments and a Job, injected by the real ``tulle inject``,
run by the test kubelet (kubelet.py) as Kubernetes runs them, each pod in its own network
namespace: the init container installs the real redirect rules, the native sidecar starts and
passes its startup probe, then the app, whose readiness probe the injector moved to the
sidecar's health port. The sidecars prove who they are with their projected service-account
tokens (TokenReview) to a ``tulle controlplane --registry kubernetes`` that reads everything
from KMock, and call each other by Service name through both sidecars with mTLS."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.e2e.conftest import BIN, ControlPlane, _stop, start_control_plane, wait_until
from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi
from tests.kube.kubelet import Pod
from tests.kube.kubelet_node import Node, in_pod
from tests.kube.tokenreviews import TokenReviews
from tulle.api.kinds import KINDS
from tulle.kube.install.crds import crd
from tulle.local.pods import GATEWAY

# The pods' bridge at 198.18.0.1 and the control plane on port 15012, as `tulle up --pods`:
# never beside another test of the host's network (tests/conftest.py).
pytestmark = pytest.mark.xdist_group("host-network")

REPO = Path(__file__).resolve().parents[2]
NS = "podrun"
SYSTEM = "podrun-system"  # the control plane's namespace: its Lease and Secrets apart from others'
APP_IMAGE = "tulle-test/app:1"
TRUST = "spiffe://cluster.local/ns/podrun/sa"


def deployment(name: str, account: str) -> dict[str, Any]:
    """An app's Deployment as a user writes it (no mesh in it)."""
    app = {
        "name": "app", "image": APP_IMAGE,
        "command": ["python3", "tests/e2e/http_backend.py", "--name", "$(POD_NAME)",
                    "--host", "0.0.0.0", "--port", "8080"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "http", "containerPort": 8080}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1},
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
    }  # fmt: skip
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"serviceAccountName": account, "containers": [app],
                                       "terminationGracePeriodSeconds": 20}}},
    }  # fmt: skip


JOB_SCRIPT = """
import json, sys, urllib.request, urllib.error
def get(url):
    try:
        with urllib.request.urlopen(url, timeout=20) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
direct = get("http://back:8080/")
through = get("http://front:8080/call?url=http://back:8080/")
print(json.dumps({"direct": direct, "through": through}), flush=True)
sys.exit(0 if direct[0] == 403 and through[0] == 200 else 1)
"""


def job() -> dict[str, Any]:
    """A Job whose one container calls back (refused: not front) and front (which calls back)."""
    app = {"name": "client", "image": APP_IMAGE, "command": ["python3", "-c", JOB_SCRIPT],
           "securityContext": {"runAsUser": 1000}}  # fmt: skip
    template = {"metadata": {"labels": {"app": "client"}},
                "spec": {"serviceAccountName": "client", "restartPolicy": "Never",
                         "containers": [app]}}  # fmt: skip
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "client", "namespace": NS},
            "spec": {"backoffLimit": 0, "template": template}}  # fmt: skip


def inject(*objects: dict[str, Any]) -> list[dict[str, Any]]:
    """``tulle inject -f -`` (the real CLI) of ``objects``, for a control plane in SYSTEM."""
    text = yaml.safe_dump_all(objects)
    xds = f"xds_address=tulle-controlplane.{SYSTEM}.svc:15012"
    done = subprocess.run([str(BIN / "tulle"), "inject", "-f", "-", "--set", xds], input=text,
                          capture_output=True, text=True, timeout=60, check=True)  # fmt: skip
    return list(yaml.safe_load_all(done.stdout))


def service(name: str, address: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"app": name}, "clusterIP": address,
                 "ports": [{"name": "http", "port": 8080, "targetPort": "http"}]},
    }  # fmt: skip


@dataclass
class Cluster:
    """The node, the control plane, and the running pods by name."""

    node: Node
    plane: ControlPlane
    injected: dict[str, dict[str, Any]]
    pods: dict[str, Pod]

    def start(self, kind_name: str, pod_name: str, template_hash: str = "") -> Pod:
        template = json.loads(json.dumps(self.injected[kind_name]["spec"]["template"]))
        owner = None
        if template_hash:
            template["metadata"]["labels"]["pod-template-hash"] = template_hash
            owner = ("ReplicaSet", f"{kind_name}-{template_hash}")
        pod = self.node.run(template, pod_name, NS, owner, timeout=90)
        self.pods[pod_name] = pod
        return pod

    def curl(self, pod: Pod, url: str) -> tuple[int, dict[str, Any]]:
        """GET ``url`` from inside ``pod`` (as root: through its sidecar, like its app)."""
        done = in_pod(pod, "curl", "-s", "-m", "20", "-w", "\n%{http_code}", url)
        body, _, code = done.stdout.rpartition("\n")
        return int(code or 0), (json.loads(body) if body.startswith("{") else {"raw": body})


@pytest.fixture(scope="module")
def cluster(
    kube_api: KubeApi, token_reviews: TokenReviews, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("podrun")
    env = {"KUBECONFIG": str(kube_api.kubeconfig), "PATH": "/usr/bin:/bin", "HOME": str(root)}
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
              "metadata": {"name": "default", "namespace": NS}, "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip
    only_front = {
        "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
        "metadata": {"name": "back", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "back"}}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": [
                     "cluster.local/ns/podrun/sa/front"]}}]}]},
    }  # fmt: skip
    listing = {"apiVersion": "v1", "kind": "List",
               "items": [*(crd(model) for model in KINDS), namespace,
                         service("front", "10.96.7.1"), service("back", "10.96.7.2")]}  # fmt: skip
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(listing))
    for resource in (strict, only_front):
        kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(resource))
    injected = {obj["metadata"]["name"]: obj
                for obj in inject(deployment("front", "front"), deployment("back", "back"), job())}  # fmt: skip
    proxy_image = injected["front"]["spec"]["template"]["spec"]["initContainers"][1]["image"]
    node = Node(
        kube_api, token_reviews, {proxy_image: REPO, APP_IMAGE: REPO}, root / "node", "k", SYSTEM
    )
    plane = None
    plane_log = (root / "controlplane.log").open("w")
    try:
        config = root / "config"
        config.mkdir()
        plane = start_control_plane(
            root / "state", config, host=GATEWAY, insecure_xds=False, secure_xds_port=15012,
            stderr=plane_log,
            extra=("--registry", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig),
                   "--namespace", SYSTEM),
        )  # fmt: skip
        # The root certificate every pod mounts: published by the control plane.
        node.read("v1", "configmaps", NS, "tulle-ca-root-cert", timeout=60)
        found = Cluster(node, plane, injected, {})
        yield found
    finally:
        node.close()
        if plane is not None:
            _stop(plane.proc)
        plane_log.close()
        kubectl(env, "delete", "--ignore-not-found", "-n", NS, "services", "front", "back")
        kubectl(env, "delete", "--ignore-not-found", "-n", NS, "endpointslices",
                "front-kubelet", "back-kubelet", "client-kubelet")  # fmt: skip
        # The session's API server is shared: other modules' checks read every policy in it.
        kubectl(env, "delete", "--ignore-not-found", "-n", NS,
                "peerauthentications.v1.security.istio.io", "default")  # fmt: skip
        kubectl(env, "delete", "--ignore-not-found", "-n", NS,
                "authorizationpolicies.v1.security.istio.io", "back")  # fmt: skip


@pytest.fixture(scope="module")
def running(cluster: Cluster) -> Cluster:
    """front and back, one pod each, started as a ReplicaSet's, and ready."""
    for name, template_hash in (("front", "5d8f"), ("back", "7c4b")):
        pod = cluster.start(name, f"{name}-{template_hash}-a1b2c", template_hash)
        pod.wait_ready(90)
    return cluster


def test_pods_call_each_other_by_name_through_both_sidecars_with_mtls(running: Cluster) -> None:
    front, back = running.pods["front-5d8f-a1b2c"], running.pods["back-7c4b-a1b2c"]
    # The init container ran the real rules in the pod, the sidecar is a native sidecar.
    rules = in_pod(front, "iptables-save", "-t", "nat").stdout
    assert "TULLE" in rules, rules
    assert "--uid-owner 1337" in rules, rules

    last: list[tuple[int, dict[str, Any]]] = []

    def called() -> bool:
        last[:] = [running.curl(front, "http://front:8080/call?url=http://back:8080/hello")]
        return last[0][0] == 200 and last[0][1].get("status") == 200

    try:
        wait_until(called, timeout=60)
    finally:
        print("last answer:", last, "\nfront's sidecar:", front.container("tulle-proxy").output(),
              "\nback's sidecar:", back.container("tulle-proxy").output())  # fmt: skip
    code, answer = last[0]
    assert code == 200
    seen = json.loads(answer["body"])
    assert seen["name"] == back.name
    assert seen["path"] == "/hello"
    # back's sidecar terminated mTLS from front's: the caller's identity is front's certificate.
    xfcc = seen["headers"]["x-forwarded-client-cert"]
    assert f"By={TRUST}/back" in xfcc, xfcc
    assert f"URI={TRUST}/front" in xfcc, xfcc
    # STRICT holds in the pod: plain text from outside the mesh to back's app port is refused
    # (the pod's rules take it to the sidecar, which wants mTLS), never answered by the app.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{back.ip}:8080/hello", timeout=10)


def test_an_injected_job_completes_and_its_sidecar_exits(running: Cluster) -> None:
    pod = running.start("client", "client-x7k2p")
    hooks = pod.wait_completed(120)
    client = pod.container("client")
    assert pod.phase == "Succeeded", client.output()
    outcome = json.loads(client.output().strip().splitlines()[-1])
    assert outcome["direct"][0] == 403  # back admits front's principal only
    assert "no ALLOW policy matches (podrun/back)" in outcome["direct"][1]
    assert json.loads(json.loads(outcome["through"][1])["body"])["name"].startswith("back-")
    sidecar = pod.container("tulle-proxy")
    assert sidecar.proc is not None
    assert sidecar.proc.returncode == 0, sidecar.output()  # drained by its preStop, then SIGTERM
    assert [(name, code) for name, code, _ in hooks] == [("tulle-proxy", 0)]
    running.node.remove(pod)


def test_deleting_a_pod_drains_it_and_moves_its_traffic(running: Cluster) -> None:
    front, first = running.pods["front-5d8f-a1b2c"], running.pods["back-7c4b-a1b2c"]
    second = running.start("back", "back-7c4b-z9y8x", "7c4b")
    second.wait_ready(90)

    def answers(count: int) -> list[str]:
        """Who answered each of ``count`` calls from front to back ("-" for a failed call)."""
        names = []
        for _ in range(count):
            code, answer = running.curl(front, "http://front:8080/call?url=http://back:8080/")
            ok = code == 200 and answer.get("status") == 200
            names.append(json.loads(answer["body"])["name"] if ok else "-")
        return names

    # The EndpointSlice lists both replicas: front's sidecar balances over them.
    wait_until(lambda: {first.name, second.name} <= set(answers(8)), timeout=60)
    hooks = second.delete()
    # The kubelet ran the native sidecar's preStop hook (tulle proxy-drain) after the app had
    # stopped; it drained, and the sidecar exited 0 on the SIGTERM that followed.
    assert [(name, code) for name, code, _ in hooks] == [("tulle-proxy", 0)], hooks
    assert hooks[0][2].strip(), "proxy-drain printed the sidecar's answer"
    sidecar = second.container("tulle-proxy")
    assert sidecar.proc is not None
    assert sidecar.proc.returncode == 0, sidecar.output()
    # Its endpoint left the slice: every call now goes to the other replica and succeeds.
    wait_until(lambda: answers(6) == [first.name] * 6, timeout=60)
    assert answers(12) == [first.name] * 12
