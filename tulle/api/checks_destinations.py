"""Cross-resource checks of DestinationRule settings that the schema alone cannot judge: slow
start where the algorithm has none, and workload selectors that select nothing."""

from __future__ import annotations

from collections.abc import Iterator

from tulle.api.check_context import Context
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import DestinationRule, Workload
from tulle.api.kinds import networking as net
from tulle.api.loader import Loaded
from tulle.api.normalize import workload_labels
from tulle.api.source import FieldPath

WARNING = Severity.WARNING


def _warmup_ignored(
    item: Loaded, path: FieldPath, settings: net.LoadBalancerSettings | None
) -> Iterator[Finding]:
    if settings is None or not settings.has_warmup:
        return
    if settings.consistent_hash is not None:
        algorithm = "consistentHash"
    elif settings.simple == "RANDOM":
        algorithm = "RANDOM"
    else:
        return
    field = "warmup" if settings.warmup is not None else "warmupDurationSecs"
    yield item.finding(
        WARNING,
        (*path, "loadBalancer", field),
        f"slow start has no effect with {algorithm}: Istio and Envoy ramp endpoints up only "
        "with ROUND_ROBIN and LEAST_REQUEST",
    )


def traffic_policies(
    rule: DestinationRule,
) -> Iterator[tuple[FieldPath, net.TrafficPolicy | net.PortTrafficPolicy]]:
    """Every traffic policy of a rule (its own, its subsets', their port levels), with paths."""
    levels: list[tuple[FieldPath, net.TrafficPolicy | None]] = [
        (("spec", "trafficPolicy"), rule.spec.traffic_policy)
    ]
    levels += [
        (("spec", "subsets", i, "trafficPolicy"), s.traffic_policy)
        for i, s in enumerate(rule.spec.subsets)
    ]
    for path, policy in levels:
        if policy is None:
            continue
        yield path, policy
        for j, port in enumerate(policy.port_level_settings):
            yield (*path, "portLevelSettings", j), port


def check_warmup(ctx: Context) -> Iterator[Finding]:
    """``warmup`` / ``warmupDurationSecs`` beside an algorithm with no slow start."""
    for rule, item in ctx.of(DestinationRule):
        for path, policy in traffic_policies(rule):
            yield from _warmup_ignored(item, path, policy.load_balancer)


def check_workload_selectors(ctx: Context) -> Iterator[Finding]:
    """A ``workloadSelector`` without labels (it selects every client of its namespace), and,
    in local mode (Workloads present), one no Workload of its namespace matches."""
    workloads = [w for w, _ in ctx.of(Workload)]
    for rule, item in ctx.of(DestinationRule):
        selector = rule.spec.workload_selector
        if selector is None:
            continue
        path = ("spec", "workloadSelector")
        wanted = selector.match_labels.items()
        if not wanted:
            yield item.finding(
                WARNING,
                path,
                "workloadSelector has no matchLabels: the rule applies to every client in "
                f"namespace {rule.namespace}",
            )
            continue
        mine = [workload_labels(w) for w in workloads if w.namespace == rule.namespace]
        if workloads and not any(wanted <= labels.items() for labels in mine):
            shown = ", ".join(f"{k}={v}" for k, v in sorted(selector.match_labels.items()))
            yield item.finding(
                WARNING,
                (*path, "matchLabels"),
                f"no Workload in namespace {rule.namespace} has labels {shown}: the rule "
                "applies to no client (a workloadSelector never selects another namespace's)",
            )


__all__ = ["check_warmup", "check_workload_selectors", "traffic_policies"]
