"""Kubernetes objects to inject: a Pod, every kind with a pod template (Deployment, StatefulSet,
DaemonSet, ReplicaSet, ReplicationController, Job, and CronJob's job template), and Lists of
them. Other kinds pass through unchanged; an injected pod is left as it is, so injecting twice
equals injecting once."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from tulle.inject.annotations import read_options
from tulle.inject.errors import FieldPath, InjectError
from tulle.inject.pod import check_spec, inject_pod, is_injected
from tulle.inject.settings import MeshSettings

TEMPLATES: dict[str, FieldPath] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
"""Where each kind keeps its pod template (a Pod is its own: metadata and spec at the top)."""


@dataclass(frozen=True)
class Injection:
    """An injected object: the object (a new one; the input is not changed), how many pods
    or pod templates were injected, and the warnings (each naming its object)."""

    object: Any
    injected: int
    warnings: tuple[str, ...]


def inject(obj: Any, settings: MeshSettings) -> Injection:
    """``obj`` with the sidecar (or the library's settings) added to each pod it describes;
    InjectError names the field (from ``obj``'s top) that prevents it."""
    result = copy.deepcopy(obj)
    warnings: list[str] = []
    count = _inject(result, (), settings, warnings)
    return Injection(result, count, tuple(warnings))


def describe(obj: Any) -> str:
    """``Deployment shop/frontend``: an object as messages name it."""
    if not isinstance(obj, dict):
        return "-"
    found = obj.get("metadata")
    metadata: dict[str, Any] = found if isinstance(found, dict) else {}
    name = metadata.get("name") or metadata.get("generateName") or "-"
    namespace = metadata.get("namespace")
    kind = obj.get("kind", "-")
    return f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"


def _inject(obj: Any, path: FieldPath, settings: MeshSettings, warnings: list[str]) -> int:
    if not isinstance(obj, dict):
        raise InjectError(path, "not a Kubernetes object (a mapping with apiVersion and kind)")
    kind = obj.get("kind")
    if not isinstance(kind, str) or not kind:
        raise InjectError((*path, "kind"), "missing")
    if kind.endswith("List") and "items" in obj:
        items = obj["items"]
        if items is None:
            return 0
        if not isinstance(items, list):
            raise InjectError((*path, "items"), "not a list")
        return sum(
            _inject(item, (*path, "items", index), settings, warnings)
            for index, item in enumerate(items)
        )
    if kind == "Pod":
        template, template_path = obj, path
    elif kind in TEMPLATES:
        template, template_path = _dig(obj, TEMPLATES[kind], path)
    else:
        return 0
    metadata = template.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InjectError((*template_path, "metadata"), "not a mapping")
    spec_path = (*template_path, "spec")
    spec = check_spec(template.get("spec"), spec_path)
    if is_injected(metadata, spec):
        return 0
    options = read_options(metadata, (*template_path, "metadata"), settings)
    name = describe(obj)
    warnings += [f"{name}: {warning}" for warning in options.warnings]
    if not options.inject:
        if "Istio" in options.skip_reason:
            warnings.append(f"{name}: not injected: {options.skip_reason}")
        return 0
    if spec.get("hostNetwork") is True:
        warnings.append(f"{name}: not injected: it uses the host's network (spec.hostNetwork)")
        return 0
    template["metadata"] = metadata
    added = inject_pod(metadata, spec, spec_path, settings, options)
    warnings += [f"{name}: {warning}" for warning in added]
    return 1


def _dig(
    obj: dict[str, Any], steps: FieldPath, path: FieldPath
) -> tuple[dict[str, Any], FieldPath]:
    node: Any = obj
    where = path
    for step in steps:
        where = (*where, step)
        node = node.get(step) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            raise InjectError(where, "missing or not a mapping")
    return node, where
