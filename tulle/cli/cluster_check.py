"""``tulle check --kube``'s pre-flight: the cluster's checks (tulle.kube.precheck) and, for each
pod of a namespace labelled ``tulle-injection=enabled``, the injector's own judgement
(tulle.inject.admission, what the webhook would answer were the pod created now): a pod it would
patch runs without the sidecar and needs a restart; one it would refuse could not be
re-created at all."""

from __future__ import annotations

from typing import Any

from tulle.cli.cluster import ClusterApi
from tulle.kube.precheck import Finding, Precheck, precheck

FINISHED_PHASES = ("Succeeded", "Failed")


def pod_findings(pods: dict[str, list[dict[str, Any]]], control_namespace: str) -> list[Finding]:
    """Pods of labelled namespaces the webhook would change (not injected) or refuse."""
    from tulle.inject import MeshSettings
    from tulle.inject.admission import admit_pod

    settings = MeshSettings()
    findings = []
    checked = 0
    for namespace, items in sorted(pods.items()):
        for pod in items:
            metadata = pod.get("metadata") or {}
            phase = (pod.get("status") or {}).get("phase")
            if phase in FINISHED_PHASES or metadata.get("deletionTimestamp"):
                continue
            checked += 1
            name = f"Pod {namespace}/{metadata.get('name')}"
            decision = admit_pod("CREATE", "", "Pod", namespace, pod, settings, control_namespace)
            if not decision.allowed:
                findings.append(
                    Finding("injection", f"{decision.message} (the webhook refuses it)", True)
                )
            elif decision.patch:
                findings.append(
                    Finding(
                        "injection",
                        f"{name} runs without the sidecar (started before its namespace was "
                        f"labelled, or while the webhook was away): restart it: "
                        f"{_restart(namespace, metadata)}",
                        True,
                    )
                )
    if checked and not findings:
        findings.append(Finding("injection", f"all {checked} pods of labelled namespaces injected"))
    return findings


def _restart(namespace: str, metadata: dict[str, Any]) -> str:
    """The command that re-creates the pod: its Deployment's (or other owner's) rollout
    restart, else deleting the pod."""
    for owner in metadata.get("ownerReferences") or ():
        kind, owner_name = owner.get("kind"), str(owner.get("name"))
        if kind == "ReplicaSet":
            template_hash = (metadata.get("labels") or {}).get("pod-template-hash")
            if template_hash and owner_name.endswith(f"-{template_hash}"):
                deployment = owner_name.removesuffix(f"-{template_hash}")
                return f"kubectl -n {namespace} rollout restart deployment {deployment}"
        if kind in ("StatefulSet", "DaemonSet"):
            return f"kubectl -n {namespace} rollout restart {kind.lower()} {owner_name}"
    return f"kubectl -n {namespace} delete pod {metadata.get('name')} (and create it again)"


def preflight(api: ClusterApi) -> Precheck:
    """Every pre-flight finding, pods included; exits saying why when the cluster cannot be
    read."""
    from tulle.cli.client import fail
    from tulle.kube.cluster import ClusterError

    try:
        found = precheck(api.cluster, api.proxy)
    except ClusterError as error:
        raise fail(f"error: {error}") from None
    found.findings += pod_findings(found.pods, api.proxy.namespace)
    return found
