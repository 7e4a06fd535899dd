"""``tulle check --kube``'s pre-flight of a cluster (as ``istioctl x precheck`` and ``linkerd
check``): each check reads the API server as the user and gives one :class:`Finding`.

- the Kubernetes version (1.29 or newer: native sidecars are on by default from 1.29);
- the CRDs of the kinds Tulle reads (tulle.dev and Istio's: a missing one is named; the Gateway
  API's are optional);
- the control plane's Deployment ready;
- the injection and validation webhook configurations present, each webhook with a caBundle
  and a Service that has a ready endpoint;
- the control plane reachable through the API server (``/healthz`` over the service proxy);
- the namespaces labelled ``tulle-injection=enabled``, and their pods (whether each pod is
  injected is the injector's judgement, made by the CLI with tulle.inject).

The rules are pure functions of the objects read, tested without a cluster; :func:`precheck`
reads them."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tulle.kube.cluster import Cluster, ClusterError, ControlPlaneProxy
from tulle.kube.install.crds import GATEWAY_GROUP, config_models, plural
from tulle.kube.install.names import (
    CONTROL_PLANE,
    INJECTION_LABEL,
    injector_name,
    validator_name,
)

MIN_VERSION = (1, 29)
INJECTION_SELECTOR = f"{INJECTION_LABEL}=enabled"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


@dataclass(frozen=True)
class Finding:
    """One line of the pre-flight: its topic, what was found, and whether it is a problem."""

    topic: str
    message: str
    problem: bool = False

    def line(self) -> str:
        """As ``tulle check`` prints it."""
        return f"{'warning' if self.problem else 'ok'} [{self.topic}]: {self.message}"


def version_finding(version: dict[str, Any] | None) -> Finding:
    """From ``/version``: 1.29 or newer."""
    if version is None:
        return Finding("kubernetes", "the API server does not answer /version", True)
    text = str(version.get("gitVersion") or f"{version.get('major')}.{version.get('minor')}")
    found = re.match(r"v?(\d+)\.(\d+)", text)
    if found is None:
        major = re.match(r"\d+", str(version.get("major", "")))
        minor = re.match(r"\d+", str(version.get("minor", "")))
        if major is None or minor is None:
            return Finding("kubernetes", f"cannot read the version {text!r}", True)
        numbers = (int(major.group()), int(minor.group()))
    else:
        numbers = (int(found.group(1)), int(found.group(2)))
    wanted = ".".join(map(str, MIN_VERSION))
    if numbers < MIN_VERSION:
        return Finding(
            "kubernetes",
            f"Kubernetes {text} is older than {wanted}: the injected sidecar is a native "
            "sidecar (an init container that keeps running), on by default from 1.29; upgrade, "
            "or inject with --native-sidecar=false",
            True,
        )
    return Finding("kubernetes", f"Kubernetes {text} (>= {wanted})")


def expected_crds() -> tuple[list[str], list[str]]:
    """The CRD names Tulle reads: those it needs (tulle.dev, Istio's) and the optional ones
    (the Gateway API's)."""
    needed: list[str] = []
    optional: list[str] = []
    for model in config_models():
        name = f"{plural(model.KIND)}.{model.GROUP}"
        (optional if model.GROUP == GATEWAY_GROUP else needed).append(name)
    return needed, optional


def crd_findings(installed: Iterable[str]) -> list[Finding]:
    """Which of the CRDs Tulle reads are missing."""
    present = set(installed)
    needed, optional = expected_crds()
    missing = [name for name in needed if name not in present]
    findings = []
    if missing:
        findings.append(
            Finding(
                "crds",
                f"missing CRDs: {', '.join(missing)} (tulle install adds them; without them "
                "that config cannot be applied or read)",
                True,
            )
        )
    else:
        findings.append(Finding("crds", f"the {len(needed)} CRDs of the tulle.dev and Istio kinds"))
    absent = [name for name in optional if name not in present]
    if absent:
        findings.append(
            Finding("crds", f"not installed (optional): {', '.join(absent)}: those routes not read")
        )
    return findings


def deployment_finding(deployment: dict[str, Any] | None, namespace: str) -> Finding:
    """The control plane's Deployment: every wanted replica available."""
    name = f"Deployment {namespace}/{CONTROL_PLANE}"
    if deployment is None:
        return Finding(
            "control-plane",
            f"no {name}: is the control plane installed here? (tulle install --namespace "
            f"{namespace})",
            True,
        )
    wanted = (deployment.get("spec") or {}).get("replicas", 1)
    available = (deployment.get("status") or {}).get("availableReplicas") or 0
    if available < wanted:
        return Finding(
            "control-plane",
            f"{name}: {available} of {wanted} replicas available (kubectl -n {namespace} "
            f"describe deployment {CONTROL_PLANE})",
            True,
        )
    return Finding("control-plane", f"{name}: {available} of {wanted} replicas available")


@dataclass(frozen=True)
class WebhookService:
    """The Service a webhook calls, and its ready endpoint addresses."""

    namespace: str
    name: str
    exists: bool
    ready: int


def webhook_findings(
    kind: str,
    name: str,
    configuration: dict[str, Any] | None,
    services: dict[tuple[str, str], WebhookService],
) -> list[Finding]:
    """One webhook configuration: present, each webhook with a caBundle and a Service with a
    ready endpoint (``services``: by namespace and name)."""
    if configuration is None:
        return [Finding("webhooks", f"no {kind} {name} (tulle install writes it)", True)]
    findings = []
    for webhook in configuration.get("webhooks") or ():
        config = webhook.get("clientConfig") or {}
        label = f"{kind} {name} webhook {webhook.get('name', '?')}"
        if not config.get("caBundle"):
            findings.append(
                Finding(
                    "webhooks",
                    f"{label} has no caBundle: the API server cannot verify the control plane's "
                    "certificate, so every call fails (the control plane writes it at start: "
                    "is it running with --webhook-port?)",
                    True,
                )
            )
        reference = config.get("service")
        if not reference:
            findings.append(
                Finding("webhooks", f"{label} calls {config.get('url', 'no URL')} (not checked)")
            )
            continue
        key = (str(reference.get("namespace")), str(reference.get("name")))
        service = services.get(key)
        where = f"Service {key[0]}/{key[1]}"
        if service is None or not service.exists:
            findings.append(Finding("webhooks", f"{label} calls {where}, which is missing", True))
        elif service.ready == 0:
            findings.append(
                Finding(
                    "webhooks",
                    f"{label} calls {where}, which has no ready endpoint (pods cannot be "
                    "created in labelled namespaces while the webhook fails closed)",
                    True,
                )
            )
        elif config.get("caBundle"):
            findings.append(
                Finding("webhooks", f"{label}: caBundle set, {where} has {service.ready} ready")
            )
    return findings


def ready_endpoints(slices: Iterable[dict[str, Any]]) -> int:
    """Ready addresses in EndpointSlices (``ready`` unset counts as ready, as in Kubernetes)."""
    count = 0
    for item in slices:
        for endpoint in item.get("endpoints") or ():
            if (endpoint.get("conditions") or {}).get("ready") is not False:
                count += len(endpoint.get("addresses") or ())
    return count


@dataclass
class Precheck:
    """What the pre-flight found, and the labelled namespaces' pods for the CLI to judge."""

    findings: list[Finding]
    reachable: bool
    labelled: list[str]
    pods: dict[str, list[dict[str, Any]]]


def precheck(cluster: Cluster, control: ControlPlaneProxy) -> Precheck:
    """Read the cluster and run every check; ``ClusterError`` when the API server cannot be
    read at all. A check whose objects the user may not read (403) is a warning saying so, and
    the others still run."""
    namespace = control.namespace
    findings = [version_finding(cluster.get("/version"))]
    findings += _guarded("crds", lambda: _crds(cluster))
    findings += _guarded(
        "control-plane",
        lambda: [
            deployment_finding(
                cluster.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/{CONTROL_PLANE}"),
                namespace,
            )
        ],
    )
    findings += _guarded("webhooks", lambda: _webhooks(cluster, namespace))
    reachable = _reachability(control)
    findings.append(reachable)
    labelled: list[str] = []
    pods: dict[str, list[dict[str, Any]]] = {}

    def injection() -> list[Finding]:
        found = cluster.items("/api/v1/namespaces", {"labelSelector": INJECTION_SELECTOR})
        labelled.extend(sorted(str((item.get("metadata") or {}).get("name")) for item in found))
        for name in labelled:
            pods[name] = cluster.items(f"/api/v1/namespaces/{name}/pods")
        if labelled:
            return [
                Finding(
                    "injection", f"namespaces labelled {INJECTION_SELECTOR}: {', '.join(labelled)}"
                )
            ]
        return [
            Finding(
                "injection",
                f"no namespace is labelled {INJECTION_SELECTOR}: no pod gets the sidecar "
                "automatically (kubectl label namespace NAME tulle-injection=enabled)",
            )
        ]

    findings += _guarded("injection", injection)
    return Precheck(findings, not reachable.problem, labelled, pods)


def _guarded(topic: str, check: Callable[[], list[Finding]]) -> list[Finding]:
    """``check()``'s findings; one warning naming the refusal when the API server refuses a
    read (the user's RBAC), so that the other checks still run."""
    try:
        return check()
    except ClusterError as error:
        return [Finding(topic, f"cannot check: {error}", True)]


def _crds(cluster: Cluster) -> list[Finding]:
    crds = cluster.items("/apis/apiextensions.k8s.io/v1/customresourcedefinitions")
    return crd_findings(str((crd.get("metadata") or {}).get("name")) for crd in crds)


def _webhooks(cluster: Cluster, namespace: str) -> list[Finding]:
    kinds = (
        ("MutatingWebhookConfiguration", "mutatingwebhookconfigurations", injector_name),
        ("ValidatingWebhookConfiguration", "validatingwebhookconfigurations", validator_name),
    )
    configurations = []
    for kind, resource, naming in kinds:
        name = naming(namespace)
        path = f"/apis/admissionregistration.k8s.io/v1/{resource}/{name}"
        configurations.append((kind, name, cluster.get(path)))
    services: dict[tuple[str, str], WebhookService] = {}
    for _, _, configuration in configurations:
        for webhook in (configuration or {}).get("webhooks") or ():
            reference = (webhook.get("clientConfig") or {}).get("service")
            if not reference:
                continue
            key = (str(reference.get("namespace")), str(reference.get("name")))
            if key not in services:
                exists = cluster.get(f"/api/v1/namespaces/{key[0]}/services/{key[1]}")
                slices = cluster.items(
                    f"/apis/discovery.k8s.io/v1/namespaces/{key[0]}/endpointslices",
                    {"labelSelector": f"{SERVICE_NAME_LABEL}={key[1]}"},
                )
                services[key] = WebhookService(*key, exists is not None, ready_endpoints(slices))
    findings = []
    for kind, name, configuration in configurations:
        findings += webhook_findings(kind, name, configuration, services)
    return findings


def _reachability(control: ControlPlaneProxy) -> Finding:
    """``/healthz`` of the control plane, through the API server."""
    try:
        answer = control.request("GET", "/healthz", auth=False)
    except ClusterError as error:
        return Finding("reachable", str(error), True)
    if answer.status != 200:
        return Finding(
            "reachable",
            f"the control plane does not answer through the API server ({control.where}): "
            f"HTTP {answer.status}: {answer.message()}",
            True,
        )
    return Finding(
        "reachable", f"the control plane answers through the API server ({control.where})"
    )
