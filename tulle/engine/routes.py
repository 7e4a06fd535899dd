"""The route values the engine reads on every request: a route table (virtual hosts found by
authority), its routes (matchers, clusters by weight, retry, fault, rate limit, header edits,
rewrites, redirect, mirrors, fallback), all immutable and ready to use. ``tulle.engine.config``
compiles xDS RouteConfigurations into them (and re-exports them)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tulle.engine.cors import CorsSpec
from tulle.engine.matching import HeaderTest, PathTest, QueryTest


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
    cors: CorsSpec | None = None
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
