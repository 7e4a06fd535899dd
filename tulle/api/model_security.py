"""The mesh model's security and traffic-limiting policies: PeerAuthentication,
AuthorizationPolicy, RateLimit and Fallback."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from tulle.api.model_base import Pairs, ResourceRef


@dataclass(frozen=True)
class PeerAuthenticationPolicy:
    """The mTLS mode for the workloads ``selector`` picks (None: the whole namespace, or the
    whole mesh when in the root namespace)."""

    origin: ResourceRef
    namespace: str
    selector: Pairs | None
    mode: Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]
    port_modes: tuple[tuple[int, str], ...] = ()


@dataclass(frozen=True)
class AuthorizationRule:
    """A rule: any ``sources`` entry, any ``operations`` entry, and every condition must match.
    Each entry is the original Istio field map as sorted pairs of (field, values)."""

    sources: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = ()
    operations: tuple[tuple[tuple[str, tuple[str, ...]], ...], ...] = ()
    conditions: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class AuthorizationPolicyRule:
    """An AuthorizationPolicy for the workloads ``selector`` picks (None: whole namespace)."""

    origin: ResourceRef
    namespace: str
    selector: Pairs | None
    action: Literal["ALLOW", "DENY", "AUDIT"]
    rules: tuple[AuthorizationRule, ...]


@dataclass(frozen=True)
class RateLimitPolicy:
    """A token bucket: ``rate`` tokens per second, ``burst`` at most; inbound at selected
    workloads or outbound to ``target_host`` (and ``target_route``)."""

    origin: ResourceRef
    namespace: str
    rate: float
    burst: int
    status_code: int
    selector: Pairs | None = None
    target_host: str | None = None
    target_route: str | None = None


@dataclass(frozen=True)
class FallbackPolicy:
    """Calls to ``host`` that fail on one of ``when`` go once to ``to_host`` (on ``to_port``,
    or the port that was called)."""

    origin: ResourceRef
    host: str
    to_host: str
    to_port: int | None
    when: tuple[str, ...]
