"""What a pod's annotations (and labels) ask of the injector, Tulle's names and Istio's.

Every annotation under the sidecar prefixes (``sidecar.tulle.dev/``, ``sidecar.istio.io/``,
``traffic.sidecar.istio.io/``, ``proxy.istio.io/``, ...) is either applied or reported as a
warning saying why not: none is silently ignored. :data:`ISTIO_ANNOTATIONS` is the mapping that
docs/kubernetes.md shows."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tulle.inject.errors import FieldPath, InjectError
from tulle.inject.settings import STATUS_ANNOTATION, MeshSettings

INJECT = "sidecar.tulle.dev/inject"
MESH = "tulle.dev/mesh"
ISTIO_INJECT = "sidecar.istio.io/inject"
ISTIO_STATUS = "sidecar.istio.io/status"

# Tulle's annotation: the setting it changes. Istio's spelling of each is in ISTIO_ANNOTATIONS.
TULLE_ANNOTATIONS = {
    INJECT: "inject",
    "traffic.sidecar.tulle.dev/excludeInboundPorts": "exclude_inbound_ports",
    "traffic.sidecar.tulle.dev/excludeOutboundPorts": "exclude_outbound_ports",
    "traffic.sidecar.tulle.dev/excludeOutboundIPRanges": "exclude_outbound_cidrs",
    "sidecar.tulle.dev/rewriteAppHTTPProbers": "rewrite_probes",
    "sidecar.tulle.dev/proxyImage": "image",
    "sidecar.tulle.dev/proxyCPU": "cpu_request",
    "sidecar.tulle.dev/proxyMemory": "memory_request",
    "sidecar.tulle.dev/proxyCPULimit": "cpu_limit",
    "sidecar.tulle.dev/proxyMemoryLimit": "memory_limit",
    "sidecar.tulle.dev/logLevel": "log_level",
    "sidecar.tulle.dev/nativeSidecar": "native_sidecar",
    "sidecar.tulle.dev/discoveryAddress": "xds_address",
    STATUS_ANNOTATION: "",  # written by the injector: the pod is injected
}

_ISTIO_SUPPORTED = {
    ISTIO_INJECT: INJECT,
    "traffic.sidecar.istio.io/excludeInboundPorts": "traffic.sidecar.tulle.dev/excludeInboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundPorts":
        "traffic.sidecar.tulle.dev/excludeOutboundPorts",
    "traffic.sidecar.istio.io/excludeOutboundIPRanges":
        "traffic.sidecar.tulle.dev/excludeOutboundIPRanges",
    "sidecar.istio.io/rewriteAppHTTPProbers": "sidecar.tulle.dev/rewriteAppHTTPProbers",
    "sidecar.istio.io/proxyImage": "sidecar.tulle.dev/proxyImage",
    "sidecar.istio.io/proxyCPU": "sidecar.tulle.dev/proxyCPU",
    "sidecar.istio.io/proxyMemory": "sidecar.tulle.dev/proxyMemory",
    "sidecar.istio.io/proxyCPULimit": "sidecar.tulle.dev/proxyCPULimit",
    "sidecar.istio.io/proxyMemoryLimit": "sidecar.tulle.dev/proxyMemoryLimit",
    "sidecar.istio.io/logLevel": "sidecar.tulle.dev/logLevel",
    "sidecar.istio.io/nativeSidecar": "sidecar.tulle.dev/nativeSidecar",
    "sidecar.istio.io/discoveryAddress": "sidecar.tulle.dev/discoveryAddress",
}  # fmt: skip

# Istio annotations Tulle reads only in part, or not at all, and why (warnings and the docs).
_ISTIO_PARTIAL = {
    "traffic.sidecar.istio.io/includeInboundPorts": (
        "only '*' (every inbound port but the excluded ones is intercepted)"
    ),
    "traffic.sidecar.istio.io/includeOutboundIPRanges": (
        "only '*' (all outbound traffic but the excluded ranges is intercepted)"
    ),
    "sidecar.istio.io/interceptionMode": "only REDIRECT (tulle iptables has no TPROXY mode)",
    ISTIO_STATUS: "the pod was injected by Istio: Tulle leaves it alone",
}
_ISTIO_UNSUPPORTED = {
    "traffic.sidecar.istio.io/includeOutboundPorts":
        "not supported: use excludeOutboundPorts (every other port is intercepted)",
    "traffic.sidecar.istio.io/excludeInterfaces": "not supported: tulle iptables matches ports "
        "and addresses, not interfaces",
    "traffic.sidecar.istio.io/kubevirtInterfaces": "not supported (KubeVirt)",
    "proxy.istio.io/config": "not supported: ProxyConfig is Envoy's; the sidecar always holds "
        "the app until it is ready (holdApplicationUntilProxyStarts)",
    "proxy.istio.io/overrides": "not supported (container overrides of Istio's template)",
    "sidecar.istio.io/bootstrapOverride": "not supported (an Envoy bootstrap)",
    "sidecar.istio.io/componentLogLevel": "not supported (Envoy's components); use logLevel",
    "sidecar.istio.io/agentLogLevel": "not supported (Tulle has no separate agent)",
    "sidecar.istio.io/enableCoreDump": "not supported",
    "sidecar.istio.io/extraStatTags": "not supported (Envoy's stats)",
    "sidecar.istio.io/statsInclusionPrefixes": "not supported (Envoy's stats)",
    "sidecar.istio.io/statsInclusionRegexps": "not supported (Envoy's stats)",
    "sidecar.istio.io/statsInclusionSuffixes": "not supported (Envoy's stats)",
    "sidecar.istio.io/templates": "not supported (Tulle has one template)",
    "sidecar.istio.io/userVolume": "not supported (add the volume to the pod spec)",
    "sidecar.istio.io/userVolumeMount": "not supported (Envoy's filter files)",
    "sidecar.istio.io/proxyImageType": "not supported (one image)",
    "status.sidecar.istio.io/port": "not supported: the health port is the mesh's health_port",
    "readiness.status.sidecar.istio.io/applicationPorts": "not supported: the sidecar's "
        "readiness does not probe the app's ports",
    "readiness.status.sidecar.istio.io/initialDelaySeconds": "not supported",
    "readiness.status.sidecar.istio.io/periodSeconds": "not supported",
    "readiness.status.sidecar.istio.io/failureThreshold": "not supported",
}  # fmt: skip

ISTIO_ANNOTATIONS: dict[str, tuple[str, str]] = {
    **{name: ("supported", tulle) for name, tulle in _ISTIO_SUPPORTED.items()},
    **{name: ("partly", why) for name, why in _ISTIO_PARTIAL.items()},
    **{name: ("no", why) for name, why in _ISTIO_UNSUPPORTED.items()},
}
"""Istio annotation: (``supported`` and Tulle's name, ``partly`` or ``no`` and why)."""

_PREFIXES = (
    "sidecar.tulle.dev/",
    "traffic.sidecar.tulle.dev/",
    "sidecar.istio.io/",
    "traffic.sidecar.istio.io/",
    "proxy.istio.io/",
    "status.sidecar.istio.io/",
    "readiness.status.sidecar.istio.io/",
)
_LOG_LEVELS = {"trace": "debug", "debug": "debug", "info": "info", "warning": "warning",
               "warn": "warning", "error": "error", "critical": "error",
               "off": "error"}  # fmt: skip
_TRUE = ("true", "y", "yes", "on", "enabled")
_FALSE = ("false", "n", "no", "off", "disabled")

Mode = Literal["sidecar", "library"]


@dataclass(frozen=True)
class PodOptions:
    """One pod's injection: whether, how, and what to leave out of interception."""

    inject: bool = True
    skip_reason: str = ""  # why not, when inject is False
    mode: Mode = "sidecar"
    native_sidecar: bool = True
    rewrite_probes: bool = True
    image: str = ""
    xds_address: str = ""
    log_level: str = "warning"
    cpu_request: str = ""
    memory_request: str = ""
    cpu_limit: str = ""
    memory_limit: str = ""
    exclude_inbound_ports: tuple[int, ...] = ()
    exclude_outbound_ports: tuple[int, ...] = ()
    exclude_outbound_cidrs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default=())


def read_options(
    metadata: Mapping[str, Any], path: FieldPath, settings: MeshSettings
) -> PodOptions:
    """The options of a pod whose metadata (at ``path``) is ``metadata``; InjectError names an
    annotation whose value cannot be read."""
    annotations = _strings(metadata, "annotations", path)
    labels = _strings(metadata, "labels", path)
    where = (*path, "annotations")
    warnings: list[str] = []
    values: dict[str, Any] = {
        "native_sidecar": settings.native_sidecar, "image": settings.image,
        "xds_address": settings.xds_address, "log_level": settings.log_level,
        "cpu_request": settings.cpu_request, "memory_request": settings.memory_request,
        "cpu_limit": settings.cpu_limit, "memory_limit": settings.memory_limit,
    }  # fmt: skip
    lists: dict[str, list[Any]] = {
        "exclude_inbound_ports": [], "exclude_outbound_ports": [], "exclude_outbound_cidrs": [],
    }  # fmt: skip
    for name, text in annotations.items():
        tulle_name = _ISTIO_SUPPORTED.get(name, name)
        setting = TULLE_ANNOTATIONS.get(tulle_name)
        field_path = (*where, name)
        if setting is None:
            message = _not_applied(name, text)
            if message:
                warnings.append(message)
            continue
        if setting in lists:
            lists[setting] += _list(setting, text, field_path)
        elif setting in ("native_sidecar", "rewrite_probes"):
            values[setting] = _bool(text, field_path)
        elif setting == "log_level":
            level = _LOG_LEVELS.get(text.lower())
            if level is None:
                levels = ", ".join(_LOG_LEVELS)
                raise InjectError(field_path, f"{text!r} is not a log level ({levels})")
            values[setting] = level
        elif setting and setting != "inject":
            if not text:
                raise InjectError(field_path, "empty")
            values[setting] = text
    mode = annotations.get(MESH, "sidecar")
    if mode not in ("sidecar", "library"):
        raise InjectError((*where, MESH), f"{mode!r} is not 'sidecar' or 'library'")
    inject, reason = _wanted(annotations, labels, path)
    return PodOptions(
        inject=inject,
        skip_reason=reason,
        mode="library" if mode == "library" else "sidecar",
        rewrite_probes=values.pop("rewrite_probes", True),
        exclude_inbound_ports=tuple(dict.fromkeys(lists["exclude_inbound_ports"])),
        exclude_outbound_ports=tuple(dict.fromkeys(lists["exclude_outbound_ports"])),
        exclude_outbound_cidrs=tuple(dict.fromkeys(lists["exclude_outbound_cidrs"])),
        warnings=tuple(warnings),
        **values,
    )


def _strings(metadata: Mapping[str, Any], key: str, path: FieldPath) -> dict[str, str]:
    items = metadata.get(key) or {}
    if not isinstance(items, dict):
        raise InjectError((*path, key), "not a mapping")
    for name, value in items.items():
        if not isinstance(value, str):
            raise InjectError(
                (*path, key, name),
                f"{value!r} is not a string (quote it: Kubernetes takes only strings here)",
            )
    return items


def _wanted(
    annotations: dict[str, str], labels: dict[str, str], path: FieldPath
) -> tuple[bool, str]:
    """Whether the pod asks to be injected (Tulle's and Istio's label or annotation)."""
    if ISTIO_STATUS in annotations:
        return False, f"already injected by Istio ({ISTIO_STATUS})"
    for key in (INJECT, ISTIO_INJECT):
        for where, values in (("labels", labels), ("annotations", annotations)):
            if key in values and not _bool(values[key], (*path, where, key)):
                return False, f"{where} {key}: {values[key]!r}"
    return True, ""


def _not_applied(name: str, text: str) -> str:
    """The warning for an annotation under a sidecar prefix that the injector does not apply
    (empty for other annotations and for Istio's that Tulle applies in part and this value)."""
    if name in _ISTIO_PARTIAL:
        if name == ISTIO_STATUS:
            return ""
        value = text.strip()
        if value == "*" or (name.endswith("interceptionMode") and value == "REDIRECT"):
            return ""
        return f"annotation {name}: {value!r} not applied: {_ISTIO_PARTIAL[name]}"
    if name in _ISTIO_UNSUPPORTED:
        return f"annotation {name} ignored: {_ISTIO_UNSUPPORTED[name]}"
    if name in (ISTIO_INJECT, MESH):
        return ""
    if name.startswith(_PREFIXES):
        return f"annotation {name} ignored: Tulle does not know it"
    return ""


def _bool(text: str, path: FieldPath) -> bool:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise InjectError(path, f"{text!r} is not true or false")


def _list(setting: str, text: str, path: FieldPath) -> list[Any]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if setting == "exclude_outbound_cidrs":
        return [cidr for item in items if (cidr := _cidr(item, path))]
    ports = []
    for item in items:
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise InjectError(path, f"{item!r} is not a port (1-65535)")
        ports.append(int(item))
    return ports


def _cidr(text: str, path: FieldPath) -> str:
    """The IPv4 range in ``text`` (empty for an IPv6 one: only IPv4 is intercepted)."""
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InjectError(path, f"{text!r} is not an address range (e.g. 10.0.0.0/8)") from None
    return str(network) if network.version == 4 else ""
