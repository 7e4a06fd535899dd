"""Normalization of the mesh-wide and security resources: AuthorizationPolicy,
PeerAuthentication, RateLimit, Fallback and the Mesh settings."""

from __future__ import annotations

from typing import Any

from tulle.api.durations import parse_duration
from tulle.api.kinds import AuthorizationPolicy, Fallback, Mesh, PeerAuthentication, RateLimit
from tulle.api.model import (
    AuthorizationPolicyRule,
    AuthorizationRule,
    FallbackPolicy,
    MeshSettings,
    PeerAuthenticationPolicy,
    RateLimitPolicy,
)
from tulle.api.normalize_common import HostResolver, pairs, ref
from tulle.api.normalize_locality import locality_policy

# --- security, rate limits, mesh ------------------------------------------------------------


def _field_pairs(model: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    data = model.model_dump(by_alias=True)
    return tuple(sorted((k, tuple(v)) for k, v in data.items() if v))


def authorization_rule(policy: AuthorizationPolicy) -> AuthorizationPolicyRule:
    """An AuthorizationPolicy as the model's rule."""
    spec = policy.spec
    return AuthorizationPolicyRule(
        origin=ref(policy),
        namespace=policy.namespace,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        action=spec.action,
        rules=tuple(
            AuthorizationRule(
                sources=tuple(_field_pairs(f.source) for f in rule.from_),
                operations=tuple(_field_pairs(t.operation) for t in rule.to),
                conditions=tuple((c.key, tuple(c.values), tuple(c.not_values)) for c in rule.when),
            )
            for rule in spec.rules
        ),
    )


def peer_authentication_policy(policy: PeerAuthentication) -> PeerAuthenticationPolicy:
    """A PeerAuthentication as the model's mTLS policy (no ``mtls``: UNSET)."""
    spec = policy.spec
    return PeerAuthenticationPolicy(
        origin=ref(policy),
        namespace=policy.namespace,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        mode=spec.mtls.mode if spec.mtls else "UNSET",
        port_modes=tuple(sorted((port, m.mode) for port, m in spec.port_level_mtls.items())),
    )


def rate_limit_policy(limit: RateLimit, resolve: HostResolver) -> RateLimitPolicy:
    """A RateLimit as a rate in requests per second with its burst."""
    spec = limit.spec
    per_second = 1.0 if spec.limit.unit == "second" else 60.0
    return RateLimitPolicy(
        origin=ref(limit),
        namespace=limit.namespace,
        rate=spec.limit.requests / per_second,
        burst=spec.limit.burst or spec.limit.requests,
        status_code=spec.status_code,
        selector=pairs(spec.selector.match_labels) if spec.selector else None,
        target_host=resolve(spec.target.host, limit.namespace) if spec.target else None,
        target_route=spec.target.route if spec.target else None,
    )


def fallback_policy(fallback: Fallback, resolve: HostResolver) -> FallbackPolicy:
    """A Fallback with its hosts resolved."""
    spec = fallback.spec
    return FallbackPolicy(
        origin=ref(fallback),
        host=resolve(spec.host, fallback.namespace),
        to_host=resolve(spec.to.host, fallback.namespace),
        to_port=spec.to.port,
        when=tuple(spec.when),
    )


def mesh_settings(meshes: list[Mesh]) -> MeshSettings:
    """The settings of the first Mesh, or the defaults when there is none."""
    if not meshes:
        return MeshSettings()
    spec = meshes[0].spec
    return MeshSettings(
        trust_domain=spec.trust_domain,
        mtls_mode=spec.mtls.mode,
        outbound_policy=spec.outbound_traffic_policy.mode,
        access_log=spec.access_log.enabled,
        access_log_format=spec.access_log.format,
        tracing_enabled=spec.tracing.enabled,
        tracing_sampling=spec.tracing.sampling,
        tracing_endpoint=spec.tracing.otlp.endpoint or "",
        tracing_protocol=spec.tracing.otlp.protocol,
        path_normalization=spec.path_normalization.normalization,
        workload_certificate_lifetime=parse_duration(spec.workload_certificate_lifetime),
        h2_upgrade_policy=spec.h2_upgrade_policy,
        num_trusted_proxies=spec.num_trusted_proxies,
        locality=(
            locality_policy(spec.locality_lb_setting)
            if spec.locality_lb_setting is not None
            else None
        ),
    )
