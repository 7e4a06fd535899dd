"""The WARNING for each deprecated spelling Istio still honours (:mod:`tulle.api.kinds.deprecated`
reads it as the new field): what it is read as, and the spelling to write instead; when the
new field is set too, that the old one is ignored, as Istio ignores it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tulle.api.check_context import Context
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import DestinationRule, VirtualService
from tulle.api.source import FieldPath


def _policies(spec: dict[str, Any]) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
    """Each traffic policy of a DestinationRule's raw spec, with its path."""

    def levels(policy: Any, path: FieldPath) -> Iterator[tuple[FieldPath, dict[str, Any]]]:
        if isinstance(policy, dict):
            yield path, policy
            for i, port in enumerate(policy.get("portLevelSettings") or ()):
                if isinstance(port, dict):
                    yield (*path, "portLevelSettings", i), port

    yield from levels(spec.get("trafficPolicy"), ("spec", "trafficPolicy"))
    for j, subset in enumerate(spec.get("subsets") or ()):
        if isinstance(subset, dict):
            yield from levels(subset.get("trafficPolicy"), ("spec", "subsets", j, "trafficPolicy"))


def _consecutive_errors(outlier: dict[str, Any]) -> str | None:
    n = outlier.get("consecutiveErrors")
    if n is None:
        return None
    if "consecutiveGatewayErrors" in outlier:
        return (
            "consecutiveErrors is deprecated, and ignored here: consecutiveGatewayErrors is set "
            "(Istio reads consecutiveErrors as consecutiveGatewayErrors)"
        )
    off = "" if "consecutive5xxErrors" in outlier else ", with consecutive5xxErrors off"
    return (
        f"consecutiveErrors is deprecated: read as Istio reads it, consecutiveGatewayErrors: {n} "
        f"(502, 503 and 504 count){off}; write consecutiveGatewayErrors instead"
    )


def _percent(old: str, new: str, fields: dict[str, Any]) -> str | None:
    if old not in fields:
        return None
    if new in fields:
        return f"{old} is deprecated, and ignored here: {new} is set (Istio reads {new} first)"
    return f"{old} is deprecated: read as {new}: {{value: {fields[old]}}}; write that instead"


def check_deprecated_spellings(ctx: Context) -> Iterator[Finding]:
    """One WARNING per deprecated spelling, at the field, naming the new spelling."""
    for _, item in ctx.of(DestinationRule):
        spec = item.document.data.get("spec") or {}
        for path, policy in _policies(spec):
            outlier = policy.get("outlierDetection")
            if isinstance(outlier, dict):
                message = _consecutive_errors(outlier)
                if message is not None:
                    where = (*path, "outlierDetection", "consecutiveErrors")
                    yield item.finding(Severity.WARNING, where, message)
    for _, item in ctx.of(VirtualService):
        spec = item.document.data.get("spec") or {}
        for i, route in enumerate(spec.get("http") or ()):
            if not isinstance(route, dict):
                continue
            message = _percent("mirrorPercent", "mirrorPercentage", route)
            if message is not None:
                yield item.finding(Severity.WARNING, ("spec", "http", i, "mirrorPercent"), message)
            delay = (route.get("fault") or {}).get("delay")
            if isinstance(delay, dict):
                message = _percent("percent", "percentage", delay)
                if message is not None:
                    where = ("spec", "http", i, "fault", "delay", "percent")
                    yield item.finding(Severity.WARNING, where, message)
