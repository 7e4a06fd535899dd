"""The mesh model's routes: HTTP routes (matches, destinations, header edits, redirects,
rewrites, retries, faults, mirrors) and TCP routes, whichever API wrote them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tulle.api.model_base import Pairs, ResourceRef


@dataclass(frozen=True)
class StringMatcher:
    """A string condition. ``path_prefix`` is the Gateway API's segment-wise prefix (``/a``
    matches ``/a`` and ``/a/b``, not ``/ab``); ``present`` only asks that the value exists."""

    kind: Literal["exact", "prefix", "path_prefix", "regex", "present"]
    value: str = ""
    ignore_case: bool = False


@dataclass(frozen=True)
class RouteMatch:
    """All set conditions must hold. Header names are lowercase."""

    path: StringMatcher | None = None
    method: StringMatcher | None = None
    authority: StringMatcher | None = None
    headers: tuple[tuple[str, StringMatcher], ...] = ()
    without_headers: tuple[tuple[str, StringMatcher], ...] = ()
    query_params: tuple[tuple[str, StringMatcher], ...] = ()
    port: int | None = None
    source_labels: Pairs = ()
    port_name: str | None = None
    """A Gateway API parentRef's ``sectionName`` on a Service: the Service port of this name."""

    @property
    def is_catch_all(self) -> bool:
        """True when the match accepts every request."""
        path_is_all = self.path is None or (
            self.path.kind in ("prefix", "path_prefix") and self.path.value in ("", "/")
        )
        return path_is_all and self == RouteMatch(path=self.path)


@dataclass(frozen=True)
class HeaderEdits:
    """``set`` overwrites, ``add`` appends, ``remove`` deletes (names lowercase)."""

    set: Pairs = ()
    add: Pairs = ()
    remove: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.set or self.add or self.remove)


@dataclass(frozen=True)
class WeightedDestination:
    """A destination service (host, optional subset and port) and its relative weight."""

    host: str
    subset: str | None = None
    port: int | None = None
    weight: int = 1
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)


@dataclass(frozen=True)
class Redirect:
    """Answer with a redirect. ``path`` replaces the whole path, ``prefix`` the matched prefix."""

    status: int
    scheme: str | None = None
    authority: str | None = None
    port: int | None = None
    path: str | None = None
    prefix: str | None = None
    derive_port: bool = False
    """Gateway API RequestRedirect: with no ``port``, the scheme's well-known port when a
    scheme is given, else the port the request came to (the listener's), even with another
    hostname."""


@dataclass(frozen=True)
class Rewrite:
    """Rewrite before forwarding: ``prefix`` replaces the matched prefix, ``path`` the whole
    path; ``authority`` replaces the Host."""

    prefix: str | None = None
    path: str | None = None
    authority: str | None = None


DEFAULT_RETRY_ON = (
    "connect-failure",
    "refused-stream",
    "unavailable",
    "cancelled",
    "retriable-status-codes",
)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries: total extra attempts, each attempt's timeout, and the conditions to retry on.
    Istio's default when a route sets none: 2 attempts on connect failures, refused streams,
    gRPC unavailable/cancelled and HTTP 503."""

    attempts: int = 2
    per_try_timeout: float | None = None
    retry_on: tuple[str, ...] = DEFAULT_RETRY_ON
    retriable_status_codes: tuple[int, ...] = (503,)


@dataclass(frozen=True)
class FaultPolicy:
    """Injected faults: a delay and/or an abort, each applied to a percentage of requests."""

    delay: float | None = None
    delay_percent: float = 100.0
    abort_http_status: int | None = None
    abort_grpc_status: str | None = None
    abort_percent: float = 100.0


@dataclass(frozen=True)
class Mirror:
    """Copy a percentage of requests to another destination, fire and forget."""

    host: str
    subset: str | None = None
    port: int | None = None
    percent: float = 100.0


@dataclass(frozen=True)
class CorsPolicy:
    """CORS, answered by the mesh as Envoy's CORS filter does: a preflight (OPTIONS with
    Origin and Access-Control-Request-Method) from an allowed origin is answered with the
    allow headers; one from another origin is forwarded (``forward_unmatched_preflights``)
    or answered with none; other requests from an allowed origin get Access-Control-Allow-
    Origin (the Origin itself), -Allow-Credentials and -Expose-Headers on their response. An
    origin matcher that matches ``*`` allows every origin. ``*`` in methods or headers
    echoes the preflight's request method or headers."""

    allow_origins: tuple[StringMatcher, ...] = ()
    allow_methods: tuple[str, ...] = ()
    allow_headers: tuple[str, ...] = ()
    expose_headers: tuple[str, ...] = ()
    max_age: int | None = None
    allow_credentials: bool = False
    forward_unmatched_preflights: bool = True


@dataclass(frozen=True)
class HttpRoute:
    """One HTTP rule for a host: first rule whose matches accept the request wins. No matches
    means every request. Either ``destinations`` or ``redirect`` is set."""

    origin: ResourceRef
    name: str | None = None
    matches: tuple[RouteMatch, ...] = ()
    destinations: tuple[WeightedDestination, ...] = ()
    redirect: Redirect | None = None
    rewrite: Rewrite | None = None
    timeout: float | None = None
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    fault: FaultPolicy | None = None
    mirrors: tuple[Mirror, ...] = ()
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)
    cors: CorsPolicy | None = None


@dataclass(frozen=True)
class TcpMatch:
    """Conditions for a TCP route."""

    port: int | None = None
    destination_subnets: tuple[str, ...] = ()
    source_labels: Pairs = ()


@dataclass(frozen=True)
class TcpRoute:
    """One TCP rule for a host."""

    origin: ResourceRef
    matches: tuple[TcpMatch, ...]
    destinations: tuple[WeightedDestination, ...]
