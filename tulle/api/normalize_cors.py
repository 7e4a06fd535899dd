"""Normalization of CORS: Istio's ``corsPolicy`` and the Gateway API's ``CORS`` filter as the
model's :class:`~tulle.api.model.CorsPolicy` (the fields Envoy's CORS filter reads)."""

from __future__ import annotations

import re

from tulle.api.durations import parse_duration
from tulle.api.kinds.base import StringMatch
from tulle.api.kinds.cors import CorsPolicy as IstioCors
from tulle.api.kinds.cors import HTTPCORSFilter
from tulle.api.model import CorsPolicy, StringMatcher


def _istio_origin(match: StringMatch) -> StringMatcher:
    if match.exact is not None:
        return StringMatcher("exact", match.exact)
    if match.prefix is not None:
        return StringMatcher("prefix", match.prefix)
    return StringMatcher("regex", match.regex or "")


def istio_cors(policy: IstioCors) -> CorsPolicy:
    """A VirtualService ``corsPolicy``: ``allowOrigins``, else the deprecated ``allowOrigin``
    as exact origins (Istio's translation); ``maxAge`` in whole seconds; a preflight from an
    origin that does not match is forwarded unless ``unmatchedPreflights: IGNORE``."""
    if policy.allow_origins:
        origins = tuple(_istio_origin(m) for m in policy.allow_origins)
    else:
        origins = tuple(StringMatcher("exact", o) for o in policy.allow_origin)
    return CorsPolicy(
        allow_origins=origins,
        allow_methods=tuple(policy.allow_methods),
        allow_headers=tuple(policy.allow_headers),
        expose_headers=tuple(policy.expose_headers),
        max_age=round(parse_duration(policy.max_age)) if policy.max_age else None,
        allow_credentials=bool(policy.allow_credentials),
        forward_unmatched_preflights=policy.unmatched_preflights != "IGNORE",
    )


def _gateway_origin(origin: str) -> StringMatcher:
    """``*`` alone (every origin) stays as is: a matcher matching ``*`` allows all, as in
    Envoy. A ``*`` in the host matches greedily to the left, across dots (GEP-1767)."""
    if origin == "*" or "*" not in origin:
        return StringMatcher("exact", origin)
    return StringMatcher("regex", ".*".join(re.escape(part) for part in origin.split("*")))


def gateway_cors(cors: HTTPCORSFilter) -> CorsPolicy:
    """An HTTPRoute ``CORS`` filter. A preflight from an origin that does not match is
    answered (200, no CORS headers), not forwarded (HTTPCORSFilter ``allowOrigins``)."""
    return CorsPolicy(
        allow_origins=tuple(_gateway_origin(o) for o in cors.allow_origins),
        allow_methods=tuple(cors.allow_methods),
        allow_headers=tuple(cors.allow_headers),
        expose_headers=tuple(cors.expose_headers),
        max_age=cors.max_age,
        allow_credentials=bool(cors.allow_credentials),
        forward_unmatched_preflights=False,
    )
