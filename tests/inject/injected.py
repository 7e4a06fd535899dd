"""What the injector's tests (tests/inject/test_inject_*.py) share: the mesh settings with and
without native sidecars, a document injected (exactly one pod template), and its pod, containers
and environment read back."""

from __future__ import annotations

from typing import Any

from tulle.inject import MeshSettings, inject
from tulle.inject.objects import TEMPLATES

NATIVE = MeshSettings()
LEGACY = MeshSettings(native_sidecar=False)


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod (metadata and spec) of ``obj``."""
    if obj["kind"] == "Pod":
        return obj
    node: Any = obj
    for step in TEMPLATES[obj["kind"]]:
        node = node[step]
    return node


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in c.get("env", [])}


def injected(obj: dict[str, Any], mesh: MeshSettings = NATIVE) -> dict[str, Any]:
    result = inject(obj, mesh)
    assert result.injected == 1
    return result.object
