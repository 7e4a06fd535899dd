"""The engine's config: xDS resources compiled once per update into immutable, ready-to-use
values (matchers compiled, durations in seconds, defaults filled). A resource the engine cannot
use raises :class:`ConfigError`, whose message becomes the NACK reason."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from tulle.engine.matching import (
    ConfigError,
    HeaderTest,
    PathTest,
    QueryTest,
    compile_regex,
    header_test,
    path_test,
    query_test,
)
from tulle.xds.types import FAULT_FILTER, RATELIMIT_FILTER


def seconds(duration: Any) -> float:
    """A protobuf Duration in seconds."""
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _fraction(percent: Any) -> float:
    """An Envoy FractionalPercent as a probability (0-1)."""
    denominators = {0: 100, 1: 10_000, 2: 1_000_000}
    return min(1.0, float(percent.numerator) / denominators.get(percent.denominator, 100))


@dataclass(frozen=True)
class HeaderEdits:
    """Headers to set (overwrite), add (append) and remove, names lowercase."""

    set: tuple[tuple[str, str], ...] = ()
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    # No edits at all (an attribute, not a method: the engine asks on every request).
    empty: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "empty", not (self.set or self.add or self.remove))

    def __bool__(self) -> bool:
        return not self.empty

    def apply(self, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """``headers`` (lowercase names) with the edits made."""
        if self.empty:
            return headers
        drop = set(self.remove) | {name for name, _ in self.set}
        result = [(k, v) for k, v in headers if k not in drop]
        return result + list(self.set) + list(self.add)


def header_edits(to_add: Any, to_remove: Any) -> HeaderEdits:
    """HeaderEdits from Envoy's ``*_headers_to_add`` / ``*_headers_to_remove``."""
    overwrite: list[tuple[str, str]] = []
    append: list[tuple[str, str]] = []
    for option in to_add:
        pair = (option.header.key.lower(), option.header.value)
        # APPEND_IF_EXISTS_OR_ADD is 0 (Envoy's default): append; the rest replace.
        (append if option.append_action == 0 else overwrite).append(pair)
    return HeaderEdits(tuple(overwrite), tuple(append), tuple(n.lower() for n in to_remove))


@dataclass(frozen=True)
class WeightedCluster:
    """A cluster a route sends to, its weight, and its own header edits."""

    name: str
    weight: int
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()


@dataclass(frozen=True)
class FallbackSpec:
    """Where a failed request goes once more, and which failures send it there."""

    cluster: str
    when: frozenset[str]

    def catches(self, status: int, flag: str) -> bool:
        """Whether a final answer (status, response flag) is a failure to fall back from;
        a fault-injected answer (FI) never is."""
        if flag == "FI":
            return False
        when = self.when
        return (
            ("5xx" in when and status >= 500)
            or ("gateway-error" in when and status in (502, 503, 504))
            or ("unavailable" in when and flag in ("UH", "UO"))
        )


@dataclass(frozen=True)
class RetrySpec:
    """Retry policy: extra attempts, conditions, per-try timeout, backoff bounds (seconds)."""

    attempts: int
    retry_on: frozenset[str]
    status_codes: frozenset[int]
    per_try_timeout: float | None
    base_interval: float = 0.025
    max_interval: float = 0.25

    def retries_status(self, status: int, grpc_status: str | None = None) -> bool:
        """Whether a response with ``status`` (and gRPC status name) is worth another attempt."""
        on = self.retry_on
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        if "retriable-4xx" in on and status == 409:
            return True
        if "retriable-status-codes" in on and status in self.status_codes:
            return True
        return grpc_status is not None and grpc_status.lower().replace("_", "-") in on

    def retries_error(self, kind: str) -> bool:
        """Whether a failure to get a response (``connect``, ``reset``, ``refused-stream``,
        ``timeout``) is worth another attempt."""
        on = self.retry_on
        if kind == "connect":
            return bool(on & {"connect-failure", "5xx", "gateway-error", "reset"})
        if kind == "timeout":
            return bool(on & {"5xx", "gateway-error"})
        if kind == "refused-stream":
            return bool(on & {"refused-stream", "reset", "5xx"})
        return bool(on & {"reset", "5xx"})

    def backoff(self, attempt: int, chance: random.Random) -> float:
        """Exponential backoff with full jitter (Envoy's algorithm), in seconds."""
        ceiling = min(self.max_interval, self.base_interval * (2 ** (attempt - 1)))
        return chance.uniform(0, ceiling)


@dataclass(frozen=True)
class HashSpec:
    """What a ring-hash cluster hashes on for this route."""

    kind: str
    name: str = ""


@dataclass(frozen=True)
class FaultSpec:
    """Injected faults of a route (probabilities 0-1)."""

    delay: float | None = None
    delay_chance: float = 0.0
    abort_status: int | None = None
    abort_grpc: int | None = None  # a gRPC status code (2, UNKNOWN, for codes beyond 16)
    abort_chance: float = 0.0


@dataclass(frozen=True)
class BucketSpec:
    """A token bucket: ``max_tokens``, refilled with ``tokens_per_fill`` every ``interval``."""

    name: str
    max_tokens: int
    tokens_per_fill: int
    interval: float
    status: int = 429


@dataclass(frozen=True)
class RedirectSpec:
    """A redirect answer."""

    status: int
    scheme: str = ""
    host: str = ""
    port: int = 0
    path: str = ""
    prefix: str | None = None


@dataclass(frozen=True)
class MirrorSpec:
    """Copy a share of requests to another cluster."""

    cluster: str
    chance: float


@dataclass(frozen=True)
class RouteEntry:
    """One route: its matchers and what to do."""

    name: str
    path: PathTest
    headers: tuple[HeaderTest, ...] = ()
    query: tuple[QueryTest, ...] = ()
    clusters: tuple[WeightedCluster, ...] = ()
    redirect: RedirectSpec | None = None
    timeout: float | None = None
    retry: RetrySpec | None = None
    hash: HashSpec | None = None
    fault: FaultSpec | None = None
    rate_limit: BucketSpec | None = None
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()
    prefix_rewrite: str | None = None
    regex_rewrite: tuple[Any, str] | None = None
    host_rewrite: str | None = None
    mirrors: tuple[MirrorSpec, ...] = ()
    fallback: FallbackSpec | None = None
    # Takes every request whose path starts with "/" (prefix "/", no header or query tests):
    # the common default route, matched by ``matches`` without calling the path test.
    catch_all: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        every = self.path.kind == "prefix" and self.path.value == "/"
        object.__setattr__(self, "catch_all", every and not self.headers and not self.query)

    def matches(
        self, path: str, headers: Mapping[str, str], query: Mapping[str, list[str]]
    ) -> bool:
        """Whether a request (path without query, lowercase headers) takes this route."""
        if self.catch_all:
            return path[:1] == "/"
        if not self.path(path):
            return False
        if self.headers and not all(test(headers) for test in self.headers):
            return False
        return not self.query or all(test(query) for test in self.query)

    def pick_cluster(self, chance: random.Random) -> WeightedCluster:
        """A cluster by weight."""
        if len(self.clusters) == 1:
            return self.clusters[0]
        total = sum(c.weight for c in self.clusters)
        point = chance.uniform(0, total)
        for candidate in self.clusters:
            point -= candidate.weight
            if point < 0:
                return candidate
        return self.clusters[-1]


@dataclass(frozen=True)
class VirtualHost:
    """Routes for a set of domains (``host`` and ``host:port`` forms, or ``*`` wildcards)."""

    name: str
    domains: tuple[str, ...]
    routes: tuple[RouteEntry, ...]
    request_edits: HeaderEdits = HeaderEdits()
    response_edits: HeaderEdits = HeaderEdits()


@dataclass(frozen=True)
class RouteTable:
    """A RouteConfiguration: virtual hosts found by the request's authority."""

    name: str
    virtual_hosts: tuple[VirtualHost, ...]
    exact: Mapping[str, VirtualHost] = field(default_factory=dict)
    # Whether any route looks at headers (matches, hashing on a header or cookie): when none
    # does, the engine skips building a request's header map.
    reads_headers: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        reads = any(
            route.headers or (route.hash is not None and route.hash.kind in ("header", "cookie"))
            for vhost in self.virtual_hosts
            for route in vhost.routes
        )
        object.__setattr__(self, "reads_headers", reads)

    def virtual_host(self, authority: str) -> VirtualHost | None:
        """Envoy's order: exact, then the longest ``*.suffix``, then ``prefix*``, then ``*``."""
        authority = authority.lower()
        found = self.exact.get(authority)
        if found is not None:
            return found
        best: tuple[int, VirtualHost] | None = None
        for vhost in self.virtual_hosts:
            for domain in vhost.domains:
                suffix_match = domain.startswith("*") and authority.endswith(domain[1:])
                if suffix_match and domain != "*" and (best is None or len(domain) > best[0]):
                    best = (len(domain), vhost)
        if best is not None:
            return best[1]
        for vhost in self.virtual_hosts:
            if any(
                d.endswith("*") and d != "*" and authority.startswith(d[:-1]) for d in vhost.domains
            ):
                return vhost
        for vhost in self.virtual_hosts:
            if "*" in vhost.domains:
                return vhost
        return None

    def route(
        self, authority: str, path: str, headers: Mapping[str, str], query: Mapping[str, list[str]]
    ) -> RouteEntry | None:
        """The first route of the matching virtual host that takes the request."""
        vhost = self.virtual_host(authority)
        if vhost is None:
            return None
        for entry in vhost.routes:
            if entry.matches(path, headers, query):
                return entry
        return None


def _fault(config: Any) -> FaultSpec | None:
    fault = fault_pb2.HTTPFault()
    if not config.Unpack(fault):
        raise ConfigError(f"fault filter config has type {config.type_url}")
    delay = seconds(fault.delay.fixed_delay) if fault.HasField("delay") else None
    abort_status = abort_grpc = None
    if fault.HasField("abort"):
        kind = fault.abort.WhichOneof("error_type")
        if kind == "http_status":
            abort_status = fault.abort.http_status
        elif kind == "grpc_status":
            code = fault.abort.grpc_status
            abort_grpc = code if code <= 16 else 2
    return FaultSpec(
        delay=delay,
        delay_chance=_fraction(fault.delay.percentage) if delay is not None else 0.0,
        abort_status=abort_status,
        abort_grpc=abort_grpc,
        abort_chance=_fraction(fault.abort.percentage) if fault.HasField("abort") else 0.0,
    )


def bucket(config: Any, default_name: str) -> BucketSpec | None:
    """A local_ratelimit config as a BucketSpec (None when it sets no bucket)."""
    limit = local_rate_limit_pb2.LocalRateLimit()
    if not config.Unpack(limit):
        raise ConfigError(f"local_ratelimit config has type {config.type_url}")
    if not limit.HasField("token_bucket"):
        return None
    tb = limit.token_bucket
    interval = seconds(tb.fill_interval)
    if interval <= 0 or tb.max_tokens == 0:
        raise ConfigError("local_ratelimit token bucket needs max_tokens and a fill_interval")
    return BucketSpec(
        name=limit.stat_prefix or default_name,
        max_tokens=tb.max_tokens,
        tokens_per_fill=tb.tokens_per_fill.value if tb.HasField("tokens_per_fill") else 1,
        interval=interval,
        status=limit.status.code if limit.HasField("status") and limit.status.code else 429,
    )


def _retry(policy: Any) -> RetrySpec:
    conditions = frozenset(c.strip() for c in policy.retry_on.split(",") if c.strip())
    attempts = policy.num_retries.value if policy.HasField("num_retries") else 1
    backoff = policy.retry_back_off
    base = seconds(backoff.base_interval) if backoff.HasField("base_interval") else 0.025
    ceiling = seconds(backoff.max_interval) if backoff.HasField("max_interval") else base * 10
    return RetrySpec(
        attempts=attempts,
        retry_on=conditions,
        status_codes=frozenset(policy.retriable_status_codes),
        per_try_timeout=seconds(policy.per_try_timeout)
        if policy.HasField("per_try_timeout")
        else None,
        base_interval=base,
        max_interval=ceiling,
    )


def _hash(policies: Any) -> HashSpec | None:
    for policy in policies:
        kind = policy.WhichOneof("policy_specifier")
        if kind == "header":
            return HashSpec("header", policy.header.header_name.lower())
        if kind == "cookie":
            return HashSpec("cookie", policy.cookie.name)
        if kind == "query_parameter":
            return HashSpec("query", policy.query_parameter.name)
        if kind == "connection_properties":
            return HashSpec("source_ip")
    return None


_REDIRECT_STATUS = {0: 301, 1: 302, 2: 303, 3: 307, 4: 308}


def compile_route(route: Any) -> RouteEntry:
    """An Envoy Route as a RouteEntry."""
    match = route.match
    common: dict[str, Any] = {
        "name": route.name,
        "path": path_test(match),
        "headers": tuple(header_test(h) for h in match.headers),
        "query": tuple(query_test(q) for q in match.query_parameters),
        "request_edits": header_edits(
            route.request_headers_to_add, route.request_headers_to_remove
        ),
        "response_edits": header_edits(
            route.response_headers_to_add, route.response_headers_to_remove
        ),
    }
    tulle_metadata = route.metadata.filter_metadata.get("tulle")
    if tulle_metadata is not None and "fallback" in tulle_metadata.fields:
        fields = tulle_metadata.fields
        when = fields["fallback_when"].string_value if "fallback_when" in fields else "5xx"
        common["fallback"] = FallbackSpec(
            fields["fallback"].string_value, frozenset(c for c in when.split(",") if c)
        )
    per_filter = route.typed_per_filter_config
    if FAULT_FILTER in per_filter:
        common["fault"] = _fault(per_filter[FAULT_FILTER])
    if RATELIMIT_FILTER in per_filter:
        common["rate_limit"] = bucket(per_filter[RATELIMIT_FILTER], route.name)
    action_kind = route.WhichOneof("action")
    if action_kind == "redirect":
        r = route.redirect
        return RouteEntry(
            **common,
            redirect=RedirectSpec(
                status=_REDIRECT_STATUS.get(r.response_code, 301),
                scheme=r.scheme_redirect,
                host=r.host_redirect,
                port=r.port_redirect,
                path=r.path_redirect,
                prefix=r.prefix_rewrite
                if r.WhichOneof("path_rewrite_specifier") == "prefix_rewrite"
                else None,
            ),
        )
    if action_kind != "route":
        raise ConfigError(f"route {route.name!r}: unsupported action {action_kind!r}")
    action = route.route
    specifier = action.WhichOneof("cluster_specifier")
    if specifier == "cluster":
        clusters: tuple[WeightedCluster, ...] = (WeightedCluster(action.cluster, 1),)
    elif specifier == "weighted_clusters":
        clusters = tuple(
            WeightedCluster(
                c.name,
                c.weight.value,
                header_edits(c.request_headers_to_add, c.request_headers_to_remove),
                header_edits(c.response_headers_to_add, c.response_headers_to_remove),
            )
            for c in action.weighted_clusters.clusters
            if c.weight.value > 0
        )
        if not clusters:
            raise ConfigError(f"route {route.name!r}: weighted clusters add up to 0")
    else:
        raise ConfigError(f"route {route.name!r}: unsupported cluster specifier {specifier!r}")
    timeout = seconds(action.timeout) if action.HasField("timeout") else 15.0
    regex_rewrite = None
    if action.HasField("regex_rewrite"):
        regex_rewrite = (
            compile_regex(action.regex_rewrite.pattern.regex),
            action.regex_rewrite.substitution,
        )
    return RouteEntry(
        **common,
        clusters=clusters,
        timeout=timeout or None,
        retry=_retry(action.retry_policy) if action.HasField("retry_policy") else None,
        hash=_hash(action.hash_policy),
        prefix_rewrite=action.prefix_rewrite or None,
        regex_rewrite=regex_rewrite,
        host_rewrite=action.host_rewrite_literal or None,
        mirrors=tuple(
            MirrorSpec(
                m.cluster,
                _fraction(m.runtime_fraction.default_value)
                if m.HasField("runtime_fraction")
                else 1.0,
            )
            for m in action.request_mirror_policies
        ),
    )


def compile_route_table(config: Any) -> RouteTable:
    """An Envoy RouteConfiguration as a RouteTable."""
    vhosts = []
    exact: dict[str, VirtualHost] = {}
    for vh in config.virtual_hosts:
        try:
            routes = tuple(compile_route(r) for r in vh.routes)
        except ConfigError as error:
            raise ConfigError(
                f"route config {config.name!r}, virtual host {vh.name!r}: {error}"
            ) from None
        vhost = VirtualHost(
            vh.name,
            tuple(d.lower() for d in vh.domains),
            routes,
            header_edits(vh.request_headers_to_add, vh.request_headers_to_remove),
            header_edits(vh.response_headers_to_add, vh.response_headers_to_remove),
        )
        vhosts.append(vhost)
        for domain in vhost.domains:
            if "*" in domain:
                continue
            if domain in exact:
                raise ConfigError(f"route config {config.name!r}: domain {domain!r} appears twice")
            exact[domain] = vhost
    return RouteTable(config.name, tuple(vhosts), MappingProxyType(exact))
