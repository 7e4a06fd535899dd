"""Authorization at the receiving side: Envoy RBAC configs (translated from AuthorizationPolicy)
compiled into predicates and evaluated as Istio does — any matching DENY policy denies; when
ALLOW policies exist, a request must match one; AUDIT policies only log. The HTTP filter's
config is judged per request (:func:`authorize`); the network filter's
(``envoy.extensions.filters.network.rbac.v3.RBAC``, opaque TCP) once per connection
(:func:`compile_network_rbac`, :func:`connection_denial`), on what a connection has: the peer's
address and certificate, the destination's address and port, the SNI its TLS client sent.

Addresses as Envoy reads them: ``direct_remote_ip`` (and the deprecated ``source_ip``) is the
connection's peer; ``remote_ip`` is the original client, the ``trusted_hops``-th address from
the right of ``X-Forwarded-For`` (the listener's ``xff_num_trusted_hops``), the peer when the
header has fewer or the count is 0. CIDR blocks are parsed once, when the config is compiled."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

from envoy.config.rbac.v3 import rbac_pb2

from tulle.engine.errors import MeshError, denied
from tulle.engine.matching import ConfigError, header_test, string_test

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Peer:
    """What the receiving side knows about a request (or a connection)."""

    headers: Mapping[str, str]
    path: str
    source_ip: str
    destination_port: int
    destination_ip: str = ""
    principal: str | None = None  # the SPIFFE id from mTLS; None over plain text
    sni: str = ""  # the server name the TLS client sent ("" over plain text or without one)
    trusted_hops: int = 0  # X-Forwarded-For addresses added by trusted proxies

    @cached_property
    def direct_address(self) -> Address | None:
        """The connection's peer address, parsed once per request (None: not an IP)."""
        return _address(self.source_ip)

    @cached_property
    def remote_address(self) -> Address | None:
        """The original client: the ``trusted_hops``-th address from the right of
        ``X-Forwarded-For``, else (no header, fewer addresses, no trusted hop) the peer."""
        hops = self.trusted_hops
        forwarded = self.headers.get("x-forwarded-for") if hops else None
        if forwarded:
            chain = [part.strip() for part in forwarded.split(",")]
            if len(chain) >= hops:
                return _address(chain[-hops])
        return self.direct_address

    @cached_property
    def local_address(self) -> Address | None:
        """The address the connection came to (None: unknown)."""
        return _address(self.destination_ip) if self.destination_ip else None


Check = Callable[[Peer], bool]


def _network(cidr: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(f"{cidr.address_prefix}/{cidr.prefix_len.value}", strict=False)
    except ValueError as error:
        raise ConfigError(f"RBAC CIDR range: {error}") from None


def _cidr(cidr: Any, remote: bool) -> Check:
    """A principal's IP block on the peer's address (``remote``: the original client's)."""
    network = _network(cidr)
    if remote:
        return lambda peer: (address := peer.remote_address) is not None and address in network
    return lambda peer: (address := peer.direct_address) is not None and address in network


def principal(spec: Any) -> Check:
    """A Principal as a predicate."""
    kind = spec.WhichOneof("identifier")
    if kind == "any":
        return lambda peer: True
    if kind == "and_ids":
        parts = [principal(p) for p in spec.and_ids.ids]
        return lambda peer: all(p(peer) for p in parts)
    if kind == "or_ids":
        parts = [principal(p) for p in spec.or_ids.ids]
        return lambda peer: any(p(peer) for p in parts)
    if kind == "not_id":
        inner = principal(spec.not_id)
        return lambda peer: not inner(peer)
    if kind == "authenticated":
        test = string_test(spec.authenticated.principal_name)
        return lambda peer: peer.principal is not None and test(peer.principal)
    if kind in ("direct_remote_ip", "source_ip"):
        return _cidr(getattr(spec, kind), remote=False)
    if kind == "remote_ip":
        return _cidr(spec.remote_ip, remote=True)
    if kind == "header":
        header = header_test(spec.header)
        return lambda peer: header(peer.headers)
    raise ConfigError(f"RBAC principal {kind!r} is not supported")


def permission(spec: Any) -> Check:
    """A Permission as a predicate."""
    kind = spec.WhichOneof("rule")
    if kind == "any":
        return lambda peer: True
    if kind == "and_rules":
        parts = [permission(p) for p in spec.and_rules.rules]
        return lambda peer: all(p(peer) for p in parts)
    if kind == "or_rules":
        parts = [permission(p) for p in spec.or_rules.rules]
        return lambda peer: any(p(peer) for p in parts)
    if kind == "not_rule":
        inner = permission(spec.not_rule)
        return lambda peer: not inner(peer)
    if kind == "header":
        header = header_test(spec.header)
        return lambda peer: header(peer.headers)
    if kind == "url_path":
        test = string_test(spec.url_path.path)
        return lambda peer: test(peer.path)
    if kind == "destination_port":
        port = spec.destination_port
        return lambda peer: peer.destination_port == port
    if kind == "destination_ip":
        network = _network(spec.destination_ip)
        return lambda peer: (address := peer.local_address) is not None and address in network
    if kind == "requested_server_name":
        test = string_test(spec.requested_server_name)
        return lambda peer: test(peer.sni)
    raise ConfigError(f"RBAC permission {kind!r} is not supported")


@dataclass(frozen=True)
class Policy:
    """A named policy: matches when any principal and any permission match."""

    name: str
    principals: tuple[Check, ...]
    permissions: tuple[Check, ...]

    def matches(self, peer: Peer) -> bool:
        return any(p(peer) for p in self.principals) and any(p(peer) for p in self.permissions)


@dataclass(frozen=True)
class RbacFilter:
    """One RBAC filter: its action and policies."""

    action: str
    policies: tuple[Policy, ...]


def compile_rbac(config: Any) -> RbacFilter:
    """An RBAC filter's config (``envoy.extensions.filters.http.rbac.v3.RBAC``)."""
    rules = config.rules
    action = rbac_pb2.RBAC.Action.Name(rules.action)
    policies = tuple(
        Policy(
            name,
            tuple(principal(p) for p in policy.principals),
            tuple(permission(p) for p in policy.permissions),
        )
        for name, policy in sorted(rules.policies.items())
    )
    return RbacFilter(action, policies)


# Matchers on what only an HTTP request has: a network RBAC filter using them is refused.
_HTTP_ONLY = frozenset({"header", "url_path", "uri_template"})


def _http_only(message: Any) -> str | None:
    """The first HTTP-only matcher (``header``, ``url_path``) anywhere in ``message``."""
    for field, value in message.ListFields():
        if field.name in _HTTP_ONLY and message.DESCRIPTOR.name in ("Principal", "Permission"):
            return str(field.name)
        if field.message_type is None:
            continue
        items = value.values() if field.message_type.GetOptions().map_entry else None
        if items is None:
            items = value if field.is_repeated else (value,)
        for item in items:
            found = _http_only(item)
            if found is not None:
                return found
    return None


def compile_network_rbac(config: Any, where: str) -> RbacFilter:
    """A network RBAC filter's config, or why this proxy cannot honour it (a ConfigError naming
    ``where``): the ``matcher`` forms, shadow rules, ``delay_deny``, and matchers on HTTP
    requests (a connection has no headers nor path; Istio never sends them on a TCP chain).
    Both enforcement types are honoured: the connection's principal, addresses and port do
    not change, so one decision before the first byte is what ``CONTINUOUS`` would decide."""
    for unsupported in ("matcher", "shadow_rules", "shadow_matcher", "delay_deny"):
        if config.HasField(unsupported):
            raise ConfigError(f"{where}: network RBAC {unsupported!r} is not supported")
    if not config.HasField("rules"):  # Envoy: no rules, nothing enforced
        return RbacFilter("LOG", ())
    for name, policy in sorted(config.rules.policies.items()):
        found = _http_only(policy)
        if found is not None:
            raise ConfigError(
                f"{where}: network RBAC policy {name!r} matches on {found!r}, "
                "which a TCP connection does not have"
            )
    try:
        return compile_rbac(config)
    except ConfigError as error:
        raise ConfigError(f"{where}: network {error}") from None


NO_HEADERS: Mapping[str, str] = MappingProxyType({})


def connection_denial(filters: tuple[RbacFilter, ...], peer: Peer) -> tuple[str, str] | None:
    """None when the connection may pass; otherwise ``(policy, reason)``: the DENY policy that
    matched, or ``none`` when ALLOW policies exist and none matches (Envoy's
    ``rbac_access_denied_matched_policy[none]``)."""
    for rbac in filters:
        if rbac.action == "DENY":
            for policy in rbac.policies:
                if policy.matches(peer):
                    name = policy.name.rsplit("[", 1)[0]
                    return name, f"denied by policy {name}"
        elif rbac.action == "ALLOW" and not any(p.matches(peer) for p in rbac.policies):
            names = sorted({p.name.rsplit("[", 1)[0] for p in rbac.policies}) or ["(none)"]
            return "none", f"denied: no ALLOW policy matches ({', '.join(names)})"
    return None


def authorize(filters: tuple[RbacFilter, ...], peer: Peer) -> MeshError | None:
    """None when allowed; otherwise why not (the DENY policy that matched, or no ALLOW match)."""
    for rbac in filters:
        if rbac.action == "DENY":
            for policy in rbac.policies:
                if policy.matches(peer):
                    return denied(policy.name.rsplit("[", 1)[0])
        elif rbac.action == "ALLOW" and not any(p.matches(peer) for p in rbac.policies):
            names = sorted({p.name.rsplit("[", 1)[0] for p in rbac.policies}) or ["(none)"]
            return MeshError(403, "RBAC", f"denied: no ALLOW policy matches ({', '.join(names)})")
    return None
