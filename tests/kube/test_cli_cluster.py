"""The CLI against a cluster (issue 18 §3): ``tulle proxy-status --kube``, ``tulle proxy-config
--kube`` and ``tulle check --kube`` reach a real ``tulle controlplane --registry kubernetes``
through KMock's service proxy (service_proxy.py: as kube-apiserver forwards
``services/http:tulle-controlplane:http-api/proxy/...``, dropping ``Authorization``), with the
admin token of the Secret ``tulle-admin-token`` the control plane created. The install's
manifests are applied with the real ``kubectl``, a namespace labelled with it; the Deployment
controller's and the endpoints controller's parts (a ready replica, an EndpointSlice naming the
control plane's loopback port) are written by the test, as no controller runs here."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.conftest import ControlPlane, _stop, start_control_plane
from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi
from tests.kube.service_proxy import ServiceProxy
from tulle.cli.main import app
from tulle.control.kube_admin import take_shared_admin_token
from tulle.xds.client import XdsClient

pytestmark = pytest.mark.timeout(180)

NS = "tulle-cli"
APPS = "cli-shop"
TULLE = str(Path(sys.executable).parent / "tulle")
PROXY = f"/api/v1/namespaces/{NS}/services/http:tulle-controlplane:http-api/proxy"
NODE = f"sidecar~127.0.0.1~web-1.{APPS}~{APPS}.svc.cluster.local"
SERVER_VERSION: dict[str, Any] = {"answer": None}
"""What KMock's /version says while a test sets it (None: KMock's own, v1.26)."""


@dataclass
class Cluster:
    env: dict[str, str]
    api: KubeApi
    plane: ControlPlane
    proxy: ServiceProxy
    log: Path
    manifests: str  # tulle install -o yaml's


def tulle(cluster: Cluster, *args: str, expect: int = 0) -> str:
    """A tulle command in this process against KMock; its standard output."""
    result = CliRunner().invoke(app, [*args, "--kubeconfig", str(cluster.api.kubeconfig)])
    assert result.exit_code == expect, (result.stdout, result.stderr)
    return result.stdout + result.stderr


def apply(env: dict[str, str], *objects: dict[str, Any]) -> None:
    kubectl(env, "apply", "--validate=false", "-f", "-",
            stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)}))  # fmt: skip


def pod(name: str, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": APPS, "labels": {"app": name}, **metadata},
        "spec": {"containers": [{"name": "app", "image": "shop/app:1"}]},
    }


@pytest.fixture(scope="module")
def cluster(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("cli-cluster")
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(root)}

    def version() -> dict[str, Any]:
        if SERVER_VERSION["answer"] is None:
            raise NotImplementedError  # KMock's own answer (a mismatch would disable this one)
        return dict(SERVER_VERSION["answer"])

    async def add_version() -> None:
        kube_api.emulator["get /version"] << version

    kube_api.call(add_version)
    proxy = ServiceProxy()
    proxy.install(kube_api)
    manifests = subprocess.run(
        [TULLE, "install", "-o", "yaml", "--profile", "minimal", "--namespace", NS],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=manifests)
    config = root / "config"
    config.mkdir()
    log = root / "controlplane.log"
    with log.open("w") as stderr:
        plane = start_control_plane(
            root / "state", config, stderr=stderr,
            extra=("--registry", "kubernetes", "--kubeconfig", env["KUBECONFIG"],
                   "--namespace", NS, "--log-level", "info"),
        )  # fmt: skip
    try:
        # The controllers' parts: the replica is available; the endpoints controller's slice
        # names the control plane (on loopback here, a pod IP in a cluster).
        kubectl(env, "patch", "deployment", "tulle-controlplane", "-n", NS,
                "--subresource=status", "--type=merge", "-p",
                json.dumps({"status": {"observedGeneration": 1, "replicas": 1,
                                       "updatedReplicas": 1, "availableReplicas": 1}}))  # fmt: skip
        apply(
            env,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "tulle-controlplane-x1",
                    "namespace": NS,
                    "labels": {"kubernetes.io/service-name": "tulle-controlplane"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}],
                "ports": [
                    {"name": "http-api", "port": plane.http_port, "protocol": "TCP"},
                    {"name": "https-webhook", "port": 15017, "protocol": "TCP"},
                ],
            },
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": APPS}},
        )
        yield Cluster(env, kube_api, plane, proxy, log, manifests)
    finally:
        _stop(plane.proc)
        SERVER_VERSION["answer"] = None
        kubectl(env, "delete", "--ignore-not-found", "pods", "--all", "-n", APPS)
        kubectl(env, "delete", "--ignore-not-found", "namespace", APPS)
        kubectl(env, "delete", "--ignore-not-found", "-n", NS,
                "endpointslices,secrets,leases,configmaps", "--all")  # fmt: skip
        removed = CliRunner().invoke(
            app, ["uninstall", "--namespace", NS, "--kubeconfig", str(kube_api.kubeconfig)]
        )
        assert removed.exit_code == 0, removed.output


@pytest.fixture(scope="module")
def node(cluster: Cluster) -> Iterator[str]:
    """A data plane connected to the control plane over xDS (plain text, loopback)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="xds-node", daemon=True)
    thread.start()
    client = XdsClient(f"127.0.0.1:{cluster.plane.xds_port}", NODE, lambda *_: None)

    async def connect() -> asyncio.Task[None]:
        task = asyncio.create_task(client.run())
        await asyncio.wait_for(client.ready.wait(), 60)
        return task

    async def disconnect(task: asyncio.Task[None]) -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    task = asyncio.run_coroutine_threadsafe(connect(), loop).result(90)
    try:
        yield NODE
    finally:
        asyncio.run_coroutine_threadsafe(disconnect(task), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def secret_token(env: dict[str, str]) -> str:
    secret = json.loads(kubectl(env, "get", "secret", "tulle-admin-token", "-n", NS, "-o", "json"))
    return base64.b64decode(secret["data"]["token"]).decode()


def test_every_replica_takes_the_admin_token_of_the_secret(
    cluster: Cluster, tmp_path: Path
) -> None:
    token = secret_token(cluster.env)
    assert cluster.plane.token == token
    assert (cluster.plane.state_dir / "admin-token").stat().st_mode & 0o777 == 0o600
    # Another replica (or this one restarted with a new emptyDir) reads the same token.
    again = take_shared_admin_token(Path(cluster.env["KUBECONFIG"]), None, NS, tmp_path / "s")
    assert again.read_text().strip() == token
    log = cluster.log.read_text()
    assert f"admin token: created Secret {NS}/tulle-admin-token" in log
    assert token not in log


def test_proxy_status_and_config_through_the_api_server(cluster: Cluster, node: str) -> None:
    status = tulle(cluster, "proxy-status", "--namespace", NS)
    assert node in status
    assert "SYNCED" in status
    listeners = json.loads(tulle(cluster, "proxy-config", node, "--namespace", NS))
    assert isinstance(listeners, list)
    assert (
        listeners
        == httpx.get(
            f"{cluster.plane.api}/api/v1/proxy-config",
            params={"node": node, "type": "listeners"},
            headers=cluster.plane.auth,
            timeout=10,
        ).json()["resources"]
    )
    # What reached the control plane: the token in X-Tulle-Token, never an Authorization.
    method, path, headers = cluster.proxy.forwarded[-1]
    assert (method, path) == ("GET", "/api/v1/proxy-config")
    assert headers["x-tulle-token"] == cluster.plane.token
    assert "authorization" not in {key.lower() for key in headers}


def test_without_the_token_the_control_plane_refuses(cluster: Cluster) -> None:
    url = f"{cluster.api.url}{PROXY}/api/v1/proxy-status"
    # The admin token as a bearer token does not get through: the API server takes
    # Authorization for itself and removes it.
    for headers in ({}, {"authorization": f"Bearer {cluster.plane.token}"}):
        refused = httpx.get(url, headers=headers, timeout=10)
        assert refused.status_code == 401
        assert "this API needs a token" in refused.json()["error"]
    good = httpx.get(url, headers={"x-tulle-token": cluster.plane.token}, timeout=10)
    assert good.status_code == 200
    wrong = tulle(cluster, "proxy-status", "--namespace", NS, "--token", "x" * 40, expect=1)
    assert (
        "error: token refused: unknown or revoked bootstrap token (the token given with "
        "--token was refused)"
    ) in wrong


def test_check_finds_each_problem_of_the_cluster_then_none(cluster: Cluster) -> None:
    env = cluster.env
    # Problems: KMock's own version (1.26), a CRD missing, webhooks without a caBundle (the
    # control plane runs without --webhook-port here, so nothing writes one), and a pod of a
    # labelled namespace that started before the label.
    kubectl(env, "delete", "crd", "peerauthentications.security.istio.io")
    kubectl(env, "label", "namespace", APPS, "tulle-injection=enabled")
    cart = pod(
        "cart-5d8f7-x2x",
        labels={"app": "cart", "pod-template-hash": "5d8f7"},
        ownerReferences=[
            {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-5d8f7",
             "uid": "0c1d", "controller": True},
        ],
    )  # fmt: skip
    opted_out = pod("batch", annotations={"sidecar.tulle.dev/inject": "false"})
    apply(env, cart, opted_out)
    # tulle inject -f - | kubectl apply -f -, as a user injects by hand.
    injected = subprocess.run(
        [TULLE, "inject", "-f", "-"], input=json.dumps(pod("web")),
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=injected)

    out = tulle(cluster, "check", "--namespace", NS, expect=1)
    lines = out.splitlines()
    assert any(
        line.startswith("warning [kubernetes]: Kubernetes v1.26.4+k3s1 is older than 1.29")
        for line in lines
    ), out
    assert (
        "warning [crds]: missing CRDs: peerauthentications.security.istio.io (tulle install "
        "adds them; without them that config cannot be applied or read)"
    ) in lines
    for kind, name in (
        ("MutatingWebhookConfiguration", f"tulle-sidecar-injector-{NS}"),
        ("ValidatingWebhookConfiguration", f"tulle-validator-{NS}"),
    ):
        assert any(
            line.startswith(f"warning [webhooks]: {kind} {name} webhook ")
            and "has no caBundle" in line
            for line in lines
        ), out
    assert (
        f"warning [injection]: Pod {APPS}/cart-5d8f7-x2x runs without the sidecar (started "
        "before its namespace was labelled, or while the webhook was away): restart it: "
        f"kubectl -n {APPS} rollout restart deployment cart"
    ) in lines
    assert not [line for line in lines if "batch" in line or f"{APPS}/web" in line]
    assert (
        f"ok [control-plane]: Deployment {NS}/tulle-controlplane: 1 of 1 replicas available"
        in lines
    )
    assert f"ok [injection]: namespaces labelled tulle-injection=enabled: {APPS}" in lines
    assert any(line.startswith("ok [reachable]: the control plane answers") for line in lines)

    # Fixed: a newer API server, the CRD back, the caBundle written, the pod restarted.
    SERVER_VERSION["answer"] = {"major": "1", "minor": "31", "gitVersion": "v1.31.2"}
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=cluster.manifests)
    bundle = base64.b64encode((cluster.plane.state_dir / "root-cert.pem").read_bytes()).decode()
    for resource, name in (
        ("mutatingwebhookconfiguration", f"tulle-sidecar-injector-{NS}"),
        ("validatingwebhookconfiguration", f"tulle-validator-{NS}"),
    ):
        current = json.loads(kubectl(env, "get", resource, name, "-o", "json"))
        webhooks = [
            {**hook, "clientConfig": {**hook["clientConfig"], "caBundle": bundle}}
            for hook in current["webhooks"]
        ]
        kubectl(env, "patch", resource, name, "--type=merge", "-p",
                json.dumps({"webhooks": webhooks}))  # fmt: skip
    kubectl(env, "delete", "pod", "cart-5d8f7-x2x", "-n", APPS)

    out = tulle(cluster, "check", "--namespace", NS)
    lines = out.splitlines()
    assert not [line for line in lines if line.startswith("warning")], out
    assert "ok [kubernetes]: Kubernetes v1.31.2 (>= 1.29)" in lines
    assert "ok [injection]: all 2 pods of labelled namespaces injected" in lines
    assert lines[-1].startswith("no problems found ("), out


def test_check_when_the_control_plane_has_no_endpoint(cluster: Cluster) -> None:
    env = cluster.env
    slice_ = json.loads(
        kubectl(env, "get", "endpointslice", "tulle-controlplane-x1", "-n", NS, "-o", "json")
    )
    kubectl(env, "delete", "endpointslice", "tulle-controlplane-x1", "-n", NS)
    try:
        out = tulle(cluster, "check", "--namespace", NS, expect=1)
        assert (
            "warning [reachable]: the control plane does not answer through the API server "
            f"(Service {NS}/tulle-controlplane port http-api through the API server (context "
            f"kmock ({cluster.api.url}))): HTTP 503: no endpoints available for service "
            '"http:tulle-controlplane:http-api"'
        ) in out.splitlines(), out
        assert "which has no ready endpoint" in out
        assert "the mesh checks need the control plane: skipped" in out
    finally:
        for key in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            slice_["metadata"].pop(key, None)
        apply(env, slice_)


def test_the_local_default_is_unchanged_and_server_with_kube_is_refused(cluster: Cluster) -> None:
    both = tulle(cluster, "proxy-status", "--server", "http://127.0.0.1:1", expect=2)
    assert "--server and --kube" in both
    local = CliRunner().invoke(app, ["proxy-status", "--server", "http://127.0.0.1:1"])
    assert local.exit_code == 1
    assert "cannot reach the control plane at http://127.0.0.1:1" in local.stderr


def test_a_user_without_the_secret_is_told_what_to_do(cluster: Cluster) -> None:
    out = tulle(cluster, "proxy-status", "--namespace", "tulle-nowhere", expect=1)
    assert (
        "error: no Secret tulle-nowhere/tulle-admin-token (context kmock "
        f"({cluster.api.url})): is the control plane installed in tulle-nowhere and started?"
    ) in out
