"""The test kubelet's node (tests/kube/kubelet.py runs the pods): the pods' network, the API
server it writes Pods and EndpointSlices to (as the kubelet and the endpoint controller do), the
service-account tokens the test's TokenReview answers know, and the images (name → directory)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx

from tests.kube.kmock_server import APPLY_PATCH, KubeApi
from tests.kube.kubelet import NODE_NAME, Container, KubeletError, Pod
from tests.kube.tokenreviews import TokenReviews
from tulle.local.pods import GATEWAY, PodNetwork, remove_namespace


class KubeletNetwork(PodNetwork):
    """``tulle up --pods``' bridge and namespaces under names of the kubelet's own, so that
    the checks of those tests (no ``tulle-*`` namespace left behind) never see these."""

    @property
    def bridge(self) -> str:
        return f"kbltbr{self.tag}"

    def namespace(self, replica: str) -> str:
        return f"kubelet-{self.tag}-{replica}"


class Node:
    """The node the pods run on: their network, the API server, the service-account tokens
    the API server knows, and the images (name → directory)."""

    def __init__(self, api: KubeApi, tokens: TokenReviews, images: Mapping[str, Path],
                 root: Path, tag: str, control_plane_namespace: str = "tulle-system") -> None:  # fmt: skip
        self.api, self.tokens, self.images, self.root = api, tokens, dict(images), root
        self.control_plane = f"tulle-controlplane.{control_plane_namespace}.svc"
        self.network = KubeletNetwork(tag)
        self.network.create()
        self.pods: dict[tuple[str, str], Pod] = {}
        self._next = 10

    # --- the API server ---------------------------------------------------------------------

    def _url(self, api_version: str, plural: str, namespace: str, name: str = "") -> str:
        base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
        return f"{self.api.url}{base}/namespaces/{namespace}/{plural}" + (
            f"/{name}" if name else ""
        )

    def read(self, api_version: str, plural: str, namespace: str, name: str,
             wait: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 30) -> dict[str, Any]:  # fmt: skip
        """An object from the API server (waiting until it exists and ``wait`` says so)."""
        deadline = time.monotonic() + timeout
        while True:
            answer = httpx.get(self._url(api_version, plural, namespace, name), timeout=10)
            if answer.status_code == 200 and (wait is None or wait(answer.json())):
                return dict(answer.json())
            if time.monotonic() > deadline:
                raise KubeletError(f"{plural} {namespace}/{name}: not there ({answer.status_code})")
            time.sleep(0.1)

    def _apply(self, obj: dict[str, Any], plural: str) -> None:
        metadata = obj["metadata"]
        answer = httpx.patch(
            self._url(obj["apiVersion"], plural, metadata["namespace"], metadata["name"]),
            params={"fieldManager": "kubelet", "force": "true"}, content=json.dumps(obj),
            headers={"content-type": APPLY_PATCH}, timeout=10,
        )  # fmt: skip
        if answer.status_code >= 300:
            raise KubeletError(
                f"apply {plural} {metadata['name']}: {answer.status_code} {answer.text}"
            )

    def services(self, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.api.objects("v1/services", namespace)

    def write_pod(self, pod: Pod) -> None:
        """The Pod object, with the status the kubelet reports."""
        conditions = [{"type": "Ready", "status": "True" if pod.ready and not pod.terminating
                       else "False"}]  # fmt: skip
        pod.obj["status"].update({"phase": pod.phase, "conditions": conditions})
        self._apply(pod.obj, "pods")

    def publish_endpoints(self, namespace: str) -> None:
        """The endpoint controller: an EndpointSlice per Service of ``namespace`` with a
        selector, listing the pods it selects with their conditions."""
        for service in self.services(namespace):
            spec, name = service["spec"], service["metadata"]["name"]
            selector = spec.get("selector") or {}
            if not selector:
                continue
            endpoints, ports = [], []
            for pod in self.pods.values():
                if pod.namespace != namespace or any(
                    pod.labels.get(k) != v for k, v in selector.items()
                ):
                    continue
                if pod.phase != "Running":
                    continue
                endpoints.append({
                    "addresses": [pod.ip], "nodeName": NODE_NAME,
                    "conditions": {"ready": pod.ready and not pod.terminating,
                                   "serving": pod.ready, "terminating": pod.terminating},
                    "targetRef": {"kind": "Pod", "name": pod.name, "namespace": namespace},
                })  # fmt: skip
                ports = [{"name": p.get("name", ""), "protocol": "TCP",
                          "port": pod._port(p.get("targetPort", p["port"]))}
                         for p in spec.get("ports") or []]  # fmt: skip
            self._apply({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-kubelet", "namespace": namespace,
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": ports, "endpoints": endpoints,
            }, "endpointslices")  # fmt: skip

    # --- pods -------------------------------------------------------------------------------

    def hosts(self) -> str:
        """``/etc/hosts`` of a pod: every Service by its names at its ClusterIP, the control
        plane's at the bridge's address (where the test's control plane listens)."""
        lines = ["127.0.0.1 localhost",
                 f"{GATEWAY} {self.control_plane} {self.control_plane}.cluster.local"]  # fmt: skip
        for service in self.services():
            address = service["spec"].get("clusterIP")
            if not address or address == "None":
                continue
            name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
            full = f"{name}.{namespace}.svc"
            lines.append(f"{address} {full}.cluster.local {full} {name}.{namespace} {name}")
        return "\n".join(lines) + "\n"

    def run(self, template: dict[str, Any], name: str, namespace: str,
            owner: tuple[str, str] | None = None, timeout: float = 60) -> Pod:  # fmt: skip
        """Run a pod of ``template`` (a pod template: metadata and spec, injected or not)
        named ``name``; ``owner`` (kind, name) becomes its controller reference. Returns once
        it is started; :meth:`Pod.wait_ready` waits for readiness."""
        metadata = json.loads(json.dumps(template.get("metadata") or {}))
        spec = json.loads(json.dumps(template["spec"]))
        metadata.update({"name": name, "namespace": namespace})
        if owner is not None:
            metadata["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": owner[0],
                                            "name": owner[1], "uid": f"uid-{owner[1]}",
                                            "controller": True}]  # fmt: skip
        spec.setdefault("serviceAccountName", "default")
        spec["nodeName"] = NODE_NAME
        self._next += 1
        address = f"198.18.{self._next // 250}.{self._next % 250 + 2}"
        status = {"phase": "Pending", "podIP": address, "hostIP": GATEWAY}
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec,
               "status": status}  # fmt: skip
        root = self.root / f"{namespace}-{name}"
        root.mkdir(parents=True)
        netns = self.network.add_pod(f"{self._next}", self._next, address, self.hosts())
        pod = Pod(self, obj, netns, root)
        for container in spec.get("initContainers") or []:
            native = container.get("restartPolicy") == "Always"
            pod.init.append(Container(container, root / f"{container['name']}.log", native))
        for container in spec["containers"]:
            pod.apps.append(Container(container, root / f"{container['name']}.log"))
        self.pods[(namespace, name)] = pod
        self.write_pod(pod)
        try:
            pod.start(timeout)
        except BaseException:
            self.remove(pod)
            raise
        return pod

    def remove(self, pod: Pod) -> None:
        """Kill what still runs of ``pod``, delete its object and namespace, republish."""
        for container in [*pod.apps, *pod.init]:
            if container.proc is not None and container.proc.poll() is None:
                container.proc.kill()
                container.proc.wait()
        self.pods.pop((pod.namespace, pod.name), None)
        httpx.delete(self._url("v1", "pods", pod.namespace, pod.name), timeout=10)
        if pod.netns in self.network.namespaces:
            self.network.namespaces.remove(pod.netns)
        remove_namespace(pod.netns)
        self.publish_endpoints(pod.namespace)

    def close(self) -> None:
        for pod in list(self.pods.values()):
            self.remove(pod)
        self.network.remove()


def in_pod(pod: Pod, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` in the pod's network namespace as root (``kubectl exec``, roughly)."""
    return subprocess.run(["ip", "netns", "exec", pod.netns, *argv], capture_output=True,
                          text=True, timeout=timeout, check=False, env={**os.environ})  # fmt: skip
