"""CORS on Envoy's standard fields: a route's ``typed_per_filter_config`` for
``envoy.filters.http.cors`` (``envoy.extensions.filters.http.cors.v3.CorsPolicy``), as Istio
translates a VirtualService ``corsPolicy``. Sidecars and the library read it; proxyless gRPC
clients get none (a browser's CORS has no meaning for grpcio, whose xDS client has no CORS
filter)."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.cors.v3 import cors_pb2
from google.protobuf import wrappers_pb2

from tulle.api.model import CorsPolicy
from tulle.control.translate.protos import fraction


def cors_policy(policy: CorsPolicy, string_matcher: Any) -> Any:
    """The model's CORS policy as Envoy's per-route CorsPolicy (``string_matcher`` turns the
    model's matchers into Envoy's)."""
    config = cors_pb2.CorsPolicy(
        allow_origin_string_match=[string_matcher(m) for m in policy.allow_origins],
        allow_methods=",".join(policy.allow_methods),
        allow_headers=",".join(policy.allow_headers),
        expose_headers=",".join(policy.expose_headers),
        max_age=str(policy.max_age) if policy.max_age is not None else "",
        filter_enabled=base_pb2.RuntimeFractionalPercent(default_value=fraction(100.0)),
        forward_not_matching_preflights=wrappers_pb2.BoolValue(
            value=policy.forward_unmatched_preflights
        ),
    )
    if policy.allow_credentials:
        config.allow_credentials.CopyFrom(wrappers_pb2.BoolValue(value=True))
    return config
