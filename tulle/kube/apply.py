"""``tulle install`` and ``tulle uninstall`` against a cluster: server-side apply of the
rendered manifests (field manager ``tulle``), waiting for the control plane's Deployment, and
deleting what an install created (found by its labels).

Synchronous (lightkube's ``Client``): a command that applies twenty objects in order and polls
one Deployment has nothing to run concurrently."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ALL_NS, ApiError, Client, ConfigError, KubeConfig, codecs
from lightkube.core.resource import NamespacedResource
from lightkube.core.resource_registry import resource_registry
from lightkube.resources.apiextensions_v1 import CustomResourceDefinition
from lightkube.resources.apps_v1 import Deployment

from tulle.kube.install.names import BUILTIN_NAMESPACES, CONTROL_PLANE, INSTANCE, MANAGED_BY

FIELD_MANAGER = "tulle"

Report = Callable[[str], None]


class KubeInstallError(RuntimeError):
    """The cluster refused or could not be reached; the message says which object and why."""


def _kubeconfig_path(kubeconfig: Path | None) -> Path | None:
    if kubeconfig is not None:
        return kubeconfig
    for entry in os.environ.get("KUBECONFIG", "").split(os.pathsep):
        if entry and Path(entry).expanduser().exists():
            return Path(entry).expanduser()
    default = Path("~/.kube/config").expanduser()
    return default if default.exists() else None


def connect(kubeconfig: Path | None = None, context: str | None = None) -> tuple[Client, str]:
    """A client for ``--kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``) and its
    current context or ``context``; in a pod with none of them, the pod's service account.
    Returns the client and a description of the cluster, for messages."""
    config, where = user_config(kubeconfig, context)
    return Client(config, field_manager=FIELD_MANAGER), where


def user_config(kubeconfig: Path | None = None, context: str | None = None) -> tuple[Any, str]:
    """lightkube's config as :func:`connect` chooses it, and a description of the cluster."""
    path = _kubeconfig_path(kubeconfig)
    config: Any
    try:
        if path is None:
            if context is not None:
                raise ConfigError(f"--context {context}: no kubeconfig ($KUBECONFIG, ~/.kube)")
            config = KubeConfig.from_service_account()
            where = "in-cluster service account"
        else:
            whole = KubeConfig.from_file(path)
            chosen = context or whole.current_context
            if chosen not in whole.contexts:
                known = ", ".join(whole.contexts) or "none"
                raise ConfigError(f"no context {chosen!r} (its contexts: {known})")
            config = whole.get(chosen)
            if config is None:
                raise ConfigError(f"context {chosen!r} names no cluster")
            where = f"context {chosen} ({config.cluster.server})"
    except (ConfigError, OSError, KeyError) as error:
        raise KubeInstallError(f"kubeconfig {path or '(in-cluster)'}: {error}") from None
    return config, where


def describe(manifest: dict[str, Any]) -> str:
    """``Kind namespace/name`` or ``Kind name``."""
    meta = manifest.get("metadata", {})
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{manifest['kind']} {where}{meta.get('name')}"


def _code(error: Exception) -> int | None:
    """The HTTP status of an answer (lightkube raises ApiError for a Kubernetes Status body, and
    httpx's own error for any other, such as a proxy's 404 page)."""
    if isinstance(error, httpx2.HTTPStatusError):
        return error.response.status_code
    return None


def _refusal(error: Exception, manifest: dict[str, Any] | None = None) -> KubeInstallError:
    what = f"{describe(manifest)}: " if manifest is not None else ""
    code = _code(error)
    if code is not None:
        message = (
            error.status.message
            if isinstance(error, ApiError)
            else f"HTTP {code} {error.response.reason_phrase}"  # type: ignore[attr-defined]
        )
        hint = ""
        if code == 409:
            hint = (
                " (another field manager owns these fields: are Istio's or the Gateway API's "
                "CRDs installed already? then add --skip-istio-crds / --skip-gateway-api-crds)"
            )
        return KubeInstallError(f"{what}the API server refused: {message}{hint}")
    return KubeInstallError(f"{what}cannot reach the API server: {error}")


def apply(client: Client, manifests: Iterable[dict[str, Any]], report: Report) -> None:
    """Server-side apply of each manifest, in order; one line per object."""
    for manifest in manifests:
        try:
            client.apply(codecs.from_dict(manifest))
        except httpx2.HTTPError as error:
            raise _refusal(error, manifest) from None
        report(f"✔ applied {describe(manifest)}")


def plan(client: Client, manifests: Iterable[dict[str, Any]], report: Report) -> None:
    """What :func:`apply` would do, read from the cluster but changing nothing."""
    for manifest in manifests:
        resource: Any = type(codecs.from_dict(manifest))
        meta = manifest["metadata"]
        try:
            if meta.get("namespace"):
                client.get(resource, meta["name"], namespace=meta["namespace"])
            else:
                client.get(resource, meta["name"])
            verb = "update"
        except httpx2.HTTPError as error:
            if _code(error) != 404:
                raise _refusal(error, manifest) from None
            verb = "create"
        report(f"- would {verb} {describe(manifest)}")


@dataclass(frozen=True)
class Rollout:
    """A Deployment's progress: replicas wanted, updated and available; ``failed`` says why it
    stopped progressing, if it did."""

    wanted: int
    updated: int
    available: int
    current: bool
    failed: str | None = None

    @property
    def ready(self) -> bool:
        """Every wanted replica runs the current template and is available."""
        return self.current and self.updated >= self.wanted and self.available >= self.wanted


def rollout(deployment: Deployment) -> Rollout:
    """The progress of ``deployment`` from its status."""
    spec, status, meta = deployment.spec, deployment.status, deployment.metadata
    wanted = spec.replicas if spec is not None and spec.replicas is not None else 1
    if status is None:
        return Rollout(wanted, 0, 0, False)
    generation = meta.generation if meta is not None else None
    observed = status.observedGeneration
    current = generation is None or (observed is not None and observed >= generation)
    failed = None
    for condition in status.conditions or []:
        if condition.type == "Progressing" and condition.reason == "ProgressDeadlineExceeded":
            failed = condition.message or condition.reason
    return Rollout(
        wanted, status.updatedReplicas or 0, status.availableReplicas or 0, current, failed
    )


def wait_ready(
    client: Client,
    namespace: str,
    report: Report,
    timeout: float,
    interval: float = 1.0,
    name: str = CONTROL_PLANE,
) -> Rollout:
    """Poll the control plane's Deployment until it is ready, reporting each change of its
    progress; raises KubeInstallError when it fails or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    last: Rollout | None = None
    while True:
        try:
            state = rollout(client.get(Deployment, name, namespace=namespace))
        except httpx2.HTTPError as error:
            raise _refusal(error) from None
        if state != last:
            report(
                f"- waiting for Deployment {namespace}/{name}: "
                f"{state.available}/{state.wanted} replicas available, {state.updated} updated"
            )
            last = state
        if state.ready:
            report(f"✔ control plane ready: {state.available}/{state.wanted} replicas available")
            return state
        if state.failed:
            raise KubeInstallError(f"Deployment {namespace}/{name} failed: {state.failed}")
        if time.monotonic() >= deadline:
            raise KubeInstallError(
                f"Deployment {namespace}/{name} not ready after {timeout:g}s: "
                f"{state.available}/{state.wanted} replicas available; see "
                f"kubectl -n {namespace} describe deployment {name}"
            )
        time.sleep(interval)


def _ours(obj: Any, namespace: str) -> bool:
    labels = (obj.metadata.labels if obj.metadata is not None else None) or {}
    return labels.get(MANAGED_BY) == "tulle" and labels.get(INSTANCE) == namespace


def uninstall(
    client: Client,
    namespace: str,
    kinds: Iterable[tuple[str, str]],
    report: Report,
    *,
    purge: bool = False,
    dry_run: bool = False,
) -> int:
    """Delete every object of ``kinds`` (``(apiVersion, kind)``, deleted in the reverse order)
    labelled as written by the install in ``namespace``, in any namespace; the CRDs too with
    ``purge``. Returns how many objects were (or, with ``dry_run``, would be) deleted."""
    selector: dict[str, Any] = {MANAGED_BY: "tulle", INSTANCE: namespace}
    count = 0
    order = list(dict.fromkeys(kinds))[::-1]
    for api_version, kind in order:
        if kind == "CustomResourceDefinition":
            continue
        resource: Any = resource_registry.load(api_version, kind)
        namespaced = issubclass(resource, NamespacedResource)
        try:
            found = (
                list(client.list(resource, namespace=ALL_NS, labels=selector))
                if namespaced
                else list(client.list(resource, labels=selector))
            )
        except httpx2.HTTPError as error:
            raise _refusal(error) from None
        for obj in found:
            if not _ours(obj, namespace):  # a server that ignored the selector
                continue
            if kind == "Namespace" and obj.metadata.name in BUILTIN_NAMESPACES:
                continue  # labelled by hand or by another tool: never deleted
            count += _delete(client, resource, obj, report, dry_run)
    if purge:
        try:
            managed: dict[str, Any] = {MANAGED_BY: "tulle"}
            crds = list(client.list(CustomResourceDefinition, labels=managed))
        except httpx2.HTTPError as error:
            raise _refusal(error) from None
        for crd in crds:
            labels = (crd.metadata.labels if crd.metadata else None) or {}
            if labels.get(MANAGED_BY) == "tulle":
                count += _delete(client, CustomResourceDefinition, crd, report, dry_run)
    else:
        report("- kept the CRDs (and the config in them): --purge deletes them")
    return count


def _delete(client: Client, resource: Any, obj: Any, report: Report, dry_run: bool) -> int:
    meta = obj.metadata
    kind = resource._api_info.resource.kind
    what = f"{kind} {meta.namespace + '/' if meta.namespace else ''}{meta.name}"
    if dry_run:
        report(f"- would delete {what}")
        return 1
    try:
        if meta.namespace:
            client.delete(resource, meta.name, namespace=meta.namespace)
        else:
            client.delete(resource, meta.name)
    except httpx2.HTTPError as error:
        if _code(error) == 404:  # gone meanwhile (the namespace took it)
            return 0
        raise _refusal(error) from None
    report(f"✔ deleted {what}")
    return 1
