"""What ``tulle install`` can be told: the profiles (minimal, default, demo) and the ``--set``
keys, each checked here so that a wrong value is refused with its key before anything renders."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from tulle import __version__


class InstallError(ValueError):
    """A profile, a ``--set`` key or value ``tulle install`` cannot use; the message names it."""


@dataclass(frozen=True)
class Values:
    """Everything the manifests depend on. Field names are the ``--set`` keys' Python names."""

    namespace: str = "tulle-system"
    profile: str = "default"
    image: str = "tulle"
    tag: str = __version__
    image_pull_policy: str = "IfNotPresent"
    replicas: int = 2
    pod_disruption_budget: bool = True
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = ""
    memory_limit: str = "1Gi"
    log_level: str = "info"
    webhook_failure_policy: str = "Fail"
    webhook_timeout_seconds: int = 10
    trust_domain: str = "cluster.local"
    mtls_mode: str = "PERMISSIVE"
    outbound_traffic_policy: str = "ALLOW_ANY"
    access_log: bool = True
    tracing_sampling: float = 1.0
    prometheus: str = ""  # the dashboard's traffic figures from this Prometheus ('': none)
    skip_istio_crds: bool = False
    skip_gateway_api_crds: bool = False

    @property
    def image_ref(self) -> str:
        """``image:tag`` (or ``image@digest`` when the tag is a ``sha256:`` digest)."""
        separator = "@" if self.tag.startswith("sha256:") else ":"
        return f"{self.image}{separator}{self.tag}"


PROFILES: dict[str, Values] = {
    # The control plane alone, one replica, small: a laptop cluster (kind, k3d, minikube).
    "minimal": Values(
        profile="minimal",
        replicas=1,
        pod_disruption_budget=False,
        cpu_request="50m",
        memory_request="96Mi",
        memory_limit="512Mi",
    ),
    # Two replicas spread over nodes with a PodDisruptionBudget: production.
    "default": Values(),
    # As default, with debug logs and every request traced: to watch the mesh work.
    "demo": Values(profile="demo", log_level="debug", tracing_sampling=100.0),
}

_QUANTITY = re.compile(r"\A[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?\Z")
_IMAGE = re.compile(r"\A[a-z0-9]+([._/:-][a-z0-9]+)*\Z")  # a registry host may carry a :port
_TAG = re.compile(r"\A([A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|sha256:[0-9a-f]{64})\Z")
_PROMETHEUS = re.compile(r"\A(https?://[A-Za-z0-9.:\[\]_-]+(/[A-Za-z0-9._~/-]*)?)?\Z")
_DNS_LABEL = re.compile(r"\A[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_DNS_NAME = re.compile(r"\A[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")


def _pattern(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.match(text):
            raise ValueError(f"{text!r} is not {what}")
        return text

    return check


def _choice(*allowed: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in allowed:
            raise ValueError(f"{text!r} is not one of {', '.join(allowed)}")
        return text

    return check


def _quantity(optional: bool) -> Callable[[str], str]:
    def check(text: str) -> str:
        if optional and text in ("", "none"):
            return ""
        if not _QUANTITY.match(text):
            raise ValueError(f"{text!r} is not a Kubernetes quantity (such as 100m, 256Mi, 1)")
        return text

    return check


def _integer(low: int, high: int) -> Callable[[str], int]:
    def check(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a whole number") from None
        if not low <= number <= high:
            raise ValueError(f"{number} is not between {low} and {high}")
        return number

    return check


def _percent(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not 0.0 <= number <= 100.0:
        raise ValueError(f"{number} is not a percentage from 0 to 100")
    return number


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "yes", "on", "1"):
        return True
    if text.lower() in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{text!r} is not true or false")


@dataclass(frozen=True)
class SetKey:
    """One ``--set`` key: its name, the Values field it sets, how its text is read, its help."""

    key: str
    field: str
    parse: Callable[[str], object]
    help: str


SET_KEYS: tuple[SetKey, ...] = (
    SetKey("image", "image", _pattern(_IMAGE, "an image name"), "image of the control plane"),
    SetKey("tag", "tag", _pattern(_TAG, "an image tag or sha256: digest"), "its tag or digest"),
    SetKey(
        "imagePullPolicy",
        "image_pull_policy",
        _choice("IfNotPresent", "Always", "Never"),
        "IfNotPresent, Always or Never",
    ),
    SetKey("replicas", "replicas", _integer(1, 20), "control-plane replicas (1 to 20)"),
    SetKey(
        "podDisruptionBudget",
        "pod_disruption_budget",
        _boolean,
        "a PodDisruptionBudget (minAvailable 1) when replicas > 1",
    ),
    SetKey("resources.requests.cpu", "cpu_request", _quantity(False), "CPU request"),
    SetKey("resources.requests.memory", "memory_request", _quantity(False), "memory request"),
    SetKey("resources.limits.cpu", "cpu_limit", _quantity(True), "CPU limit ('' for none)"),
    SetKey(
        "resources.limits.memory", "memory_limit", _quantity(True), "memory limit ('' for none)"
    ),
    SetKey(
        "logLevel", "log_level", _choice("debug", "info", "warning", "error"), "control-plane log"
    ),
    SetKey(
        "webhook.failurePolicy",
        "webhook_failure_policy",
        _choice("Fail", "Ignore"),
        "both webhooks when the control plane cannot answer: Fail (refuse) or Ignore (admit)",
    ),
    SetKey("webhook.timeoutSeconds", "webhook_timeout_seconds", _integer(1, 30), "webhook timeout"),
    SetKey(
        "meshConfig.trustDomain",
        "trust_domain",
        _pattern(_DNS_NAME, "a DNS name"),
        "SPIFFE trust domain",
    ),
    SetKey(
        "meshConfig.mtlsMode",
        "mtls_mode",
        _choice("STRICT", "PERMISSIVE", "DISABLE"),
        "mesh-wide mTLS",
    ),
    SetKey(
        "meshConfig.outboundTrafficPolicy",
        "outbound_traffic_policy",
        _choice("ALLOW_ANY", "REGISTRY_ONLY"),
        "calls to hosts outside the registry",
    ),
    SetKey("meshConfig.accessLog", "access_log", _boolean, "one log line per request"),
    SetKey(
        "meshConfig.tracingSampling", "tracing_sampling", _percent, "share of requests traced (%)"
    ),
    SetKey(
        "dashboard.prometheus",
        "prometheus",
        _pattern(_PROMETHEUS, "an http(s) URL (http://prometheus.monitoring:9090)"),
        "the Prometheus the dashboard reads traffic from ('' for none)",
    ),
)

_BY_KEY = {item.key: item for item in SET_KEYS}


def values_for(
    profile: str, namespace: str = "tulle-system", settings: Iterable[str] = (), **flags: bool
) -> Values:
    """The values of ``profile`` in ``namespace`` with each ``KEY=VALUE`` of ``settings`` applied
    (in order), and ``flags`` (``skip_istio_crds``, ``skip_gateway_api_crds``)."""
    if profile not in PROFILES:
        raise InstallError(f"unknown profile {profile!r}: use {', '.join(PROFILES)}")
    if not _DNS_LABEL.match(namespace):
        raise InstallError(f"--namespace {namespace!r} is not a namespace name (a DNS label)")
    values = replace(PROFILES[profile], namespace=namespace)
    known = {field.name for field in fields(Values)}
    for flag in flags:
        if flag not in known:
            raise InstallError(f"unknown flag {flag}")
    values = replace(values, **dict[str, Any](flags))
    for setting in settings:
        key, equals, text = setting.partition("=")
        if not equals:
            raise InstallError(f"--set {setting!r}: write KEY=VALUE")
        item = _BY_KEY.get(key.strip())
        if item is None:
            raise InstallError(
                f"--set {key.strip()!r}: unknown key; the keys are {', '.join(_BY_KEY)}"
            )
        try:
            value = item.parse(text.strip())
        except ValueError as error:
            raise InstallError(f"--set {item.key}: {error}") from None
        changes: dict[str, Any] = {item.field: value}
        values = replace(values, **changes)
    return values
