"""Kubelet HTTP probes through the sidecar's health port, so that STRICT mTLS does not break them
(as Istio's ``/app-health/<container>/livez`` on 15020 and ``ISTIO_KUBE_APP_PROBERS``).

Each ``httpGet`` liveness, readiness and startup probe of an app container becomes a probe of
``/app-health/<container>/<livez|readyz|startupz>`` on the health port; the original probe goes
to the sidecar in :data:`PROBERS_VARIABLE` (JSON), and the sidecar's health listener performs it
against the app on loopback and answers with its outcome. A probe that names a ``host`` is left
alone (the kubelet probes that host, not the pod), as are ``tcpSocket``, ``grpc`` and ``exec``
probes (see docs/kubernetes.md)."""

from __future__ import annotations

import copy
import json
from typing import Any

from tulle.inject.errors import FieldPath, InjectError

PROBERS_VARIABLE = "TULLE_APP_PROBERS"
PROBES = {"livenessProbe": "livez", "readinessProbe": "readyz", "startupProbe": "startupz"}


def rewrite_probes(
    containers: list[dict[str, Any]], path: FieldPath, health_port: int
) -> dict[str, dict[str, Any]]:
    """Rewrite the HTTP probes of ``containers`` (at ``path``) in place; the original probes, by
    the health listener's path."""
    probers: dict[str, dict[str, Any]] = {}
    for index, container in enumerate(containers):
        for key, short in PROBES.items():
            probe = container.get(key)
            if not isinstance(probe, dict) or not isinstance(probe.get("httpGet"), dict):
                continue
            get = probe["httpGet"]
            if get.get("host"):
                continue
            where = (*path, index, key, "httpGet")
            port = _port(container, get.get("port"), (*where, "port"))
            original: dict[str, Any] = {
                "path": get.get("path") or "/",
                "port": port,
                "scheme": get.get("scheme") or "HTTP",
            }
            if get.get("httpHeaders"):
                original["httpHeaders"] = copy.deepcopy(get["httpHeaders"])
            health_path = f"/app-health/{container['name']}/{short}"
            probers[health_path] = {
                "httpGet": original,
                "timeoutSeconds": probe.get("timeoutSeconds", 1),
            }
            probe["httpGet"] = {"path": health_path, "port": health_port, "scheme": "HTTP"}
    return probers


def probers_json(probers: dict[str, dict[str, Any]]) -> str:
    """The probers as the sidecar reads them (compact, sorted: the same text every time)."""
    return json.dumps(probers, sort_keys=True, separators=(",", ":"))


def _port(container: dict[str, Any], port: Any, path: FieldPath) -> int:
    """A probe's port as a number: a number, or the name of one of the container's ports."""
    if isinstance(port, int) and not isinstance(port, bool):
        number = port
    elif isinstance(port, str) and port.isdigit():
        number = int(port)
    elif isinstance(port, str) and port:
        for declared in container.get("ports") or ():
            if isinstance(declared, dict) and declared.get("name") == port:
                number = declared.get("containerPort", 0)
                break
        else:
            raise InjectError(path, f"no port named {port!r} in the container's ports")
    else:
        raise InjectError(path, f"{port!r} is not a port number or name")
    if not isinstance(number, int) or not 1 <= number <= 65535:
        raise InjectError(path, f"{number!r} is not a port (1-65535)")
    return number
