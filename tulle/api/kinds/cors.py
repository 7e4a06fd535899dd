"""Cross-origin resource sharing (CORS) as the two APIs write it: Istio's VirtualService
``corsPolicy`` (CorsPolicy) and the Gateway API's HTTPRoute ``CORS`` filter (HTTPCORSFilter,
GEP-1767). Both become the same model policy, which the data plane applies as Envoy's CORS filter
does."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator

from tulle.api.durations import parse_duration
from tulle.api.kinds.base import INT32_MAX, Duration, FieldError, HeaderName, Strict, StringMatch

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
"""The methods Istio's validation accepts in ``allowMethods`` (``validateHTTPMethod``)."""


def _check_method(method: str) -> str:
    if method not in HTTP_METHODS:
        raise ValueError(
            f"{method[:40]!r} is not a supported HTTP method (use {', '.join(HTTP_METHODS)})"
        )
    return method


Method = Annotated[str, AfterValidator(_check_method)]


class CorsPolicy(Strict):
    """Istio's VirtualService ``corsPolicy``. ``allowOrigin`` (deprecated: exact origins) is
    read only when ``allowOrigins`` is not set, as Istio does; ``unmatchedPreflights: IGNORE``
    answers a preflight from an origin that does not match (no CORS headers) instead of
    forwarding it."""

    allow_origins: list[StringMatch] | None = None
    allow_origin: list[str] = Field(default_factory=list)
    allow_methods: list[Method] = Field(default_factory=list)
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    max_age: Duration | None = None
    allow_credentials: bool | None = None
    unmatched_preflights: Literal["UNSPECIFIED", "FORWARD", "IGNORE"] = "UNSPECIFIED"

    @field_validator("allow_origins")
    @classmethod
    def _origins_set(cls, value: list[StringMatch] | None) -> list[StringMatch] | None:
        for index, match in enumerate(value or []):
            given = match.exact if match.exact is not None else match.prefix
            if match.is_empty or (match.regex is None and not given):
                raise FieldError(
                    (index,), "an allowed origin needs a non-empty exact, prefix or regex"
                )
        return value

    @field_validator("max_age")
    @classmethod
    def _whole_seconds(cls, value: str | None) -> str | None:
        """Envoy's ``max_age`` is whole seconds; Istio refuses finer ones."""
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds < 1 or abs(seconds - round(seconds)) > 1e-9:
            raise ValueError(f"{value!r} is not whole seconds of at least 1s (Envoy's unit)")
        return value


_ORIGIN = re.compile(r"(https?)://(\*|[A-Za-z0-9*]([A-Za-z0-9*.\-]*[A-Za-z0-9*])?)(:[0-9]{1,5})?\Z")


def _check_origin(origin: str) -> str:
    if origin == "*":
        return origin
    found = _ORIGIN.match(origin)
    if found is None:
        raise ValueError(
            f"{origin[:80]!r} is not an origin: write <scheme>://<host>[:<port>] with scheme http "
            "or https (the host may hold '*'), or '*' alone for every origin"
        )
    port = found.group(4)
    if port is not None and not 1 <= int(port[1:]) <= 65535:
        raise ValueError(f"{origin[:80]!r}: port {port[1:]} is not 1-65535")
    return origin


CORSOrigin = Annotated[str, AfterValidator(_check_origin)]
"""``<scheme>://<host>(:<port>)``, the host possibly with ``*``, or ``*`` (Gateway API)."""

_METHOD_OR_WILDCARD = Literal[
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"
]


class HTTPCORSFilter(Strict):
    """The Gateway API's HTTPRoute ``CORS`` filter (GEP-1767). ``maxAge`` defaults to 5
    seconds; ``*`` may not stand beside other origins or methods."""

    allow_origins: list[CORSOrigin] = Field(default_factory=list)
    allow_credentials: bool | None = None
    allow_methods: list[_METHOD_OR_WILDCARD] = Field(default_factory=list)
    allow_headers: list[HeaderName] = Field(default_factory=list)
    expose_headers: list[HeaderName] = Field(default_factory=list)
    max_age: Annotated[int, Field(ge=1, le=INT32_MAX)] = 5

    @model_validator(mode="after")
    def _wildcards_alone(self) -> HTTPCORSFilter:
        if "*" in self.allow_origins and len(self.allow_origins) > 1:
            raise FieldError(("allowOrigins",), "'*' cannot stand beside other origins")
        if "*" in self.allow_methods and len(self.allow_methods) > 1:
            raise FieldError(("allowMethods",), "'*' cannot stand beside other methods")
        return self
