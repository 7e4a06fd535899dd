"""The engine's config: xDS resources compiled once per update into immutable, ready-to-use
values (matchers compiled, durations in seconds, defaults filled). A resource the engine cannot
use raises :class:`ConfigError`, whose message becomes the NACK reason. This module compiles
route configurations (and the durations, buckets and header edits other config shares); the
values it makes, which the engine reads per request, are ``tulle.engine.routes``' (imported
from here too)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from envoy.extensions.filters.http.fault.v3 import fault_pb2
from envoy.extensions.filters.http.local_ratelimit.v3 import local_rate_limit_pb2

from tulle.engine.cors import compile_cors
from tulle.engine.matching import (
    ConfigError,
    compile_regex,
    header_test,
    path_test,
    query_test,
)
from tulle.engine.routes import (
    BucketSpec,
    FallbackSpec,
    FaultSpec,
    HashSpec,
    HeaderEdits,
    MirrorSpec,
    RedirectSpec,
    RetrySpec,
    RouteEntry,
    RouteTable,
    VirtualHost,
    WeightedCluster,
)
from tulle.xds.types import CORS_FILTER, FAULT_FILTER, RATELIMIT_FILTER

__all__ = [
    "BucketSpec", "FallbackSpec", "FaultSpec", "HashSpec", "HeaderEdits", "MirrorSpec",
    "RedirectSpec", "RetrySpec", "RouteEntry", "RouteTable", "VirtualHost", "WeightedCluster",
    "bucket", "compile_route", "compile_route_table", "header_edits", "seconds",
]  # fmt: skip


def seconds(duration: Any) -> float:
    """A protobuf Duration in seconds."""
    return float(duration.seconds) + float(duration.nanos) / 1e9


def _fraction(percent: Any) -> float:
    """An Envoy FractionalPercent as a probability (0-1)."""
    denominators = {0: 100, 1: 10_000, 2: 1_000_000}
    return min(1.0, float(percent.numerator) / denominators.get(percent.denominator, 100))


def header_edits(to_add: Any, to_remove: Any) -> HeaderEdits:
    """HeaderEdits from Envoy's ``*_headers_to_add`` / ``*_headers_to_remove``."""
    overwrite: list[tuple[str, str]] = []
    append: list[tuple[str, str]] = []
    for option in to_add:
        pair = (option.header.key.lower(), option.header.value)
        # APPEND_IF_EXISTS_OR_ADD is 0 (Envoy's default): append; the rest replace.
        (append if option.append_action == 0 else overwrite).append(pair)
    return HeaderEdits(tuple(overwrite), tuple(append), tuple(n.lower() for n in to_remove))


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
    if CORS_FILTER in per_filter:
        common["cors"] = compile_cors(per_filter[CORS_FILTER])
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
