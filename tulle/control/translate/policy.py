"""Inbound policy as standard Envoy filters: AuthorizationPolicy → RBAC (a DENY filter, then an
ALLOW filter, as Istio evaluates them): HTTP filters on HTTP ports, network filters
(``envoy.filters.network.rbac``) on opaque TCP ports, where Istio's rules for HTTP-only fields
apply; RateLimit → local_ratelimit (a token bucket, HTTP only)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from envoy.config.core.v3 import address_pb2, base_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2
from envoy.extensions.filters.http.rbac.v3 import rbac_pb2 as rbac_filter_pb2
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import path_pb2, regex_pb2, string_pb2
from envoy.type.v3 import http_status_pb2, token_bucket_pb2

from tulle.api.model import (
    AuthorizationPolicyRule,
    AuthorizationRule,
    Pairs,
    RateLimitPolicy,
)
from tulle.control.translate.protos import duration, fraction, uint32
from tulle.xds.types import NETWORK_RBAC_FILTER, RBAC_FILTER

ROOT_NAMESPACES = frozenset({"tulle-system", "istio-system"})


def selects(selector: Pairs | None, namespace: str, labels: Pairs, workload_ns: str) -> bool:
    """Whether a policy in ``namespace`` with ``selector`` applies to a workload."""
    if namespace not in ROOT_NAMESPACES and namespace != workload_ns:
        return False
    return selector is None or dict(selector).items() <= dict(labels).items()


def _star(value: str) -> Any:
    """Istio's string with ``*``: exact, ``prefix*``, ``*suffix`` or ``*`` (anything)."""
    if value == "*":
        return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=".+"))
    if value.endswith("*"):
        return string_pb2.StringMatcher(prefix=value[:-1])
    if value.startswith("*"):
        return string_pb2.StringMatcher(suffix=value[1:])
    return string_pb2.StringMatcher(exact=value)


def _cidr(block: str) -> Any:
    address, _, length = block.partition("/")
    bits = int(length) if length else (128 if ":" in address else 32)
    return address_pb2.CidrRange(address_prefix=address, prefix_len=uint32(bits))


def _authenticated(matcher: Any) -> Any:
    return rbac_pb2.Principal(
        authenticated=rbac_pb2.Principal.Authenticated(principal_name=matcher)
    )


def _regex(pattern: str) -> Any:
    return string_pb2.StringMatcher(safe_regex=regex_pb2.RegexMatcher(regex=pattern))


def _principal_name(value: str) -> Any:
    """A principal as Istio writes it (``cluster.local/ns/default/sa/frontend``) matched against
    the peer certificate's SPIFFE id: exact, ``prefix*``, ``*suffix``, or ``*`` (any
    authenticated peer), Istio's ``StringMatcherWithPrefix(value, "spiffe://")``."""
    if value == "*":
        return _authenticated(_regex(".+"))
    if value.startswith("*"):
        return _authenticated(_regex("spiffe://.*" + re.escape(value[1:])))
    if value.endswith("*"):
        return _authenticated(string_pb2.StringMatcher(prefix=f"spiffe://{value[:-1]}"))
    return _authenticated(string_pb2.StringMatcher(exact=f"spiffe://{value}"))


def _namespace(value: str) -> Any:
    """A namespace (``*`` a wildcard) as Istio matches it: a regex on the peer's SPIFFE id,
    ``.*/ns/<namespace>/.*``."""
    pattern = ".*".join(re.escape(part) for part in value.split("*"))
    return _authenticated(_regex(f".*/ns/{pattern}/.*"))


def _any_of_principals(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Principal(or_ids=rbac_pb2.Principal.Set(ids=items))


def _any_of_permissions(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]
    return rbac_pb2.Permission(or_rules=rbac_pb2.Permission.Set(rules=items))


def _trust_domain(value: str) -> Any:
    """A trust domain (``*`` a wildcard) matched against the peer's SPIFFE id."""
    pattern = "[^/]*".join(re.escape(part) for part in value.split("*"))
    return _authenticated(_regex(f"spiffe://{pattern}/.*"))


def _direct_ip(value: str) -> Any:
    """Istio's ``source.ip`` / ``ipBlocks``: the connection's peer (``direct_remote_ip``)."""
    return rbac_pb2.Principal(direct_remote_ip=_cidr(value))


def _remote_ip(value: str) -> Any:
    """Istio's ``remote.ip`` / ``remoteIpBlocks``: the original client (``remote_ip``), as the
    listener's ``xff_num_trusted_hops`` finds it in X-Forwarded-For."""
    return rbac_pb2.Principal(remote_ip=_cidr(value))


_SOURCE_FIELDS: dict[str, Callable[[str], Any]] = {
    "principals": _principal_name,
    "namespaces": _namespace,
    "ipBlocks": _direct_ip,
    "remoteIpBlocks": _remote_ip,
    "trustDomains": _trust_domain,
}


def _service_account(value: str, namespace: str) -> Any:
    """Istio's ``serviceAccounts`` entry, ``<namespace>/<name>`` or ``<name>`` (the policy's
    namespace): a regex on the peer's SPIFFE id (Istio's ``serviceAccountRegex``)."""
    account_namespace, _, name = value.rpartition("/")
    ns = re.escape(account_namespace or namespace)
    return _authenticated(_regex(f"spiffe://.+/ns/{ns}/(.+/|)sa/{re.escape(name)}(/.+)?"))


def _source(fields: tuple[tuple[str, tuple[str, ...]], ...], namespace: str) -> Any:
    parts = []
    for name, values in fields:
        negated = name.startswith("not")
        key = name[3].lower() + name[4:] if negated else name
        if key == "serviceAccounts":
            matcher = _any_of_principals([_service_account(v, namespace) for v in values])
            parts.append(rbac_pb2.Principal(not_id=matcher) if negated else matcher)
            continue
        build = _SOURCE_FIELDS[key]
        matcher = _any_of_principals([build(v) for v in values])
        parts.append(rbac_pb2.Principal(not_id=matcher) if negated else matcher)
    if not parts:
        return rbac_pb2.Principal(any=True)
    return rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=parts))


def _header(name: str, value: str) -> Any:
    return rc.HeaderMatcher(name=name, string_match=_star(value))


def _condition_header(name: str, value: str) -> Any:
    """A ``request.headers[NAME]`` value as Istio's ``matcher.HeaderMatcher``: ``*`` is
    presence (an empty value counts), ``*x`` a suffix, ``x*`` a prefix, else exact."""
    if value == "*":
        return rc.HeaderMatcher(name=name, present_match=True)
    return _header(name, value)


# A path segment's characters (RFC 3986 pchar), as Envoy's URI templates match them.
_SEGMENT = r"[a-zA-Z0-9\-._~%!$&'()*+,;=:@]"
_TEMPLATE = re.compile(r"\{\*\*?\}")


def _path(value: str) -> Any:
    """An operation's path: Istio's string with ``*`` (exact, ``prefix*``, ``*suffix``,
    ``*``), or, when it holds ``{*}`` or ``{**}``, an Envoy URI template (Istio's
    ``security.ContainsPathTemplate``), sent as the regex it means: ``{*}`` one path segment,
    ``{**}`` zero or more (slashes included)."""
    if not _TEMPLATE.search(value):
        return path_pb2.PathMatcher(path=_star(value))
    parts = []
    for piece in re.split(r"(\{\*\*?\})", value):
        if piece == "{*}":
            parts.append(f"{_SEGMENT}+")
        elif piece == "{**}":
            parts.append(f"(?:{_SEGMENT}|/)*")
        else:
            parts.append(re.escape(piece))
    return path_pb2.PathMatcher(path=_regex("".join(parts)))


_OPERATION_FIELDS: dict[str, Callable[[str], Any]] = {
    "methods": lambda v: rbac_pb2.Permission(header=_header(":method", v)),
    "hosts": lambda v: rbac_pb2.Permission(header=_header(":authority", v)),
    "paths": lambda v: rbac_pb2.Permission(url_path=_path(v)),
    "ports": lambda v: rbac_pb2.Permission(destination_port=int(v)),
}


def _operation(fields: tuple[tuple[str, tuple[str, ...]], ...]) -> Any:
    parts = []
    for name, values in fields:
        negated = name.startswith("not")
        key = name[3].lower() + name[4:] if negated else name
        matcher = _any_of_permissions([_OPERATION_FIELDS[key](v) for v in values])
        parts.append(rbac_pb2.Permission(not_rule=matcher) if negated else matcher)
    if not parts:
        return rbac_pb2.Permission(any=True)
    return rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=parts))


def _condition(key: str, value: str) -> tuple[str, Any]:
    """A ``when`` condition as a principal or a permission (Istio's generators; the keys of
    its [conditions reference](https://istio.io/latest/docs/reference/config/security/conditions/))."""
    if key.startswith("request.headers["):
        return "permission", rbac_pb2.Permission(header=_condition_header(key[16:-1], value))
    if key == "source.ip":
        return "principal", _direct_ip(value)
    if key == "remote.ip":
        return "principal", _remote_ip(value)
    if key == "source.namespace":
        return "principal", _namespace(value)
    if key == "source.principal":
        return "principal", _principal_name(value)
    if key == "source.trustDomain":
        return "principal", _trust_domain(value)
    if key == "destination.port":
        return "permission", rbac_pb2.Permission(destination_port=int(value))
    if key == "connection.sni":
        return "permission", rbac_pb2.Permission(requested_server_name=_star(value))
    return "permission", rbac_pb2.Permission(destination_ip=_cidr(value))


def _rule_policy(rule: AuthorizationRule, namespace: str) -> Any:
    principals = [_source(s, namespace) for s in rule.sources] or [rbac_pb2.Principal(any=True)]
    permissions = [_operation(o) for o in rule.operations] or [rbac_pb2.Permission(any=True)]
    principal = _any_of_principals(principals)
    permission = _any_of_permissions(permissions)
    extra_principals, extra_permissions = [principal], [permission]
    for key, values, not_values in rule.conditions:
        for chosen, negate in ((values, False), (not_values, True)):
            if not chosen:
                continue
            kinds = [_condition(key, v) for v in chosen]
            if kinds[0][0] == "principal":
                matcher = _any_of_principals([m for _, m in kinds])
                extra_principals.append(rbac_pb2.Principal(not_id=matcher) if negate else matcher)
            else:
                matcher = _any_of_permissions([m for _, m in kinds])
                extra_permissions.append(
                    rbac_pb2.Permission(not_rule=matcher) if negate else matcher
                )
    return rbac_pb2.Policy(
        principals=[
            extra_principals[0]
            if len(extra_principals) == 1
            else rbac_pb2.Principal(and_ids=rbac_pb2.Principal.Set(ids=extra_principals))
        ],
        permissions=[
            extra_permissions[0]
            if len(extra_permissions) == 1
            else rbac_pb2.Permission(and_rules=rbac_pb2.Permission.Set(rules=extra_permissions))
        ],
    )


_ACTIONS = (
    ("DENY", rbac_pb2.RBAC.DENY),
    ("ALLOW", rbac_pb2.RBAC.ALLOW),
    ("AUDIT", rbac_pb2.RBAC.LOG),
)


def _rules(
    policies: list[AuthorizationPolicyRule],
    transform: Callable[[AuthorizationRule, str], AuthorizationRule | None] | None = None,
) -> list[tuple[str, Any]]:
    """``(action, RBAC rules)`` in evaluation order: DENY, then ALLOW, then AUDIT (log). A
    ``transform`` may rewrite a rule or drop it (None); an action whose policies lost every
    rule keeps its (empty) RBAC: an ALLOW with no policy denies everything, as Istio's."""
    result = []
    for action, envoy_action in _ACTIONS:
        chosen = [p for p in policies if p.action == action]
        if not chosen:
            continue
        rules = rbac_pb2.RBAC(action=envoy_action)
        for policy in chosen:
            for index, rule in enumerate(policy.rules):
                kept = rule if transform is None else transform(rule, action)
                if kept is None:
                    continue
                name = f"{policy.origin.namespace}/{policy.origin.name}[{index}]"
                rules.policies[name].CopyFrom(_rule_policy(kept, policy.namespace))
        result.append((action, rules))
    return result


def rbac_filters(policies: list[AuthorizationPolicyRule]) -> list[tuple[str, Any]]:
    """``(filter name, RBAC config)`` in evaluation order: DENY, then ALLOW, then AUDIT (log).
    Istio's semantics: any DENY match denies; with ALLOW policies, a request must match one."""
    return [
        (f"{RBAC_FILTER}.{action.lower()}", rbac_filter_pb2.RBAC(rules=rules))
        for action, rules in _rules(policies)
    ]


# Fields a TCP connection does not have (Istio's generators refuse them "for TCP").
HTTP_ONLY_OPERATION_FIELDS = frozenset(
    {"hosts", "notHosts", "methods", "notMethods", "paths", "notPaths"}
)


def _http_only_condition(key: str) -> bool:
    return key.startswith("request.")


def tcp_rule(rule: AuthorizationRule, action: str) -> AuthorizationRule | None:
    """``rule`` as Istio applies it to a TCP connection. A rule with HTTP-only fields (hosts,
    methods, paths and their negations, ``request.headers[...]`` conditions): in an ALLOW
    policy it is dropped (it never admits a connection: less is allowed); in a DENY or AUDIT
    policy those fields are left out and the rule matches on the rest (more is denied; with
    nothing left, any connection). Istio's ``model.Generate(forTCP)`` and ``checkError``."""
    http_only = any(
        name in HTTP_ONLY_OPERATION_FIELDS for operation in rule.operations for name, _ in operation
    ) or any(_http_only_condition(key) for key, _, _ in rule.conditions)
    if not http_only:
        return rule
    if action == "ALLOW":
        return None
    return AuthorizationRule(
        sources=rule.sources,
        operations=tuple(
            tuple((n, v) for n, v in operation if n not in HTTP_ONLY_OPERATION_FIELDS)
            for operation in rule.operations
        ),
        conditions=tuple(c for c in rule.conditions if not _http_only_condition(c[0])),
    )


TCP_STAT_PREFIX = "tcp."  # Istio's (the filter's stats: tcp.rbac.allowed, tcp.rbac.denied)


def network_rbac_filters(policies: list[AuthorizationPolicyRule]) -> list[tuple[str, Any]]:
    """``(filter name, network RBAC config)`` for an opaque TCP port, in evaluation order
    (DENY, ALLOW, AUDIT), from the same policies as the HTTP filters, each rule as
    :func:`tcp_rule` says. Enforced once per connection (``ONE_TIME_ON_FIRST_BYTE``)."""
    return [
        (
            f"{NETWORK_RBAC_FILTER}.{action.lower()}",
            network_rbac_pb2.RBAC(rules=rules, stat_prefix=TCP_STAT_PREFIX),
        )
        for action, rules in _rules(policies, tcp_rule)
    ]


def local_rate_limit(limit: RateLimitPolicy, stat_prefix: str) -> Any:
    """A RateLimit as local_ratelimit's config: a token bucket, enforced on every request."""
    interval = 1.0 if limit.rate >= 1 else 1.0 / limit.rate
    tokens = max(1, round(limit.rate * interval))
    return local_rate_limit_pb2.LocalRateLimit(
        stat_prefix=stat_prefix,
        status=http_status_pb2.HttpStatus(code=limit.status_code),
        token_bucket=token_bucket_pb2.TokenBucket(
            max_tokens=limit.burst,
            tokens_per_fill=uint32(tokens),
            fill_interval=duration(interval),
        ),
        filter_enabled=_all(),
        filter_enforced=_all(),
    )


def _all() -> Any:
    return base_pb2.RuntimeFractionalPercent(default_value=fraction(100.0))
