"""CORS, as Envoy's CORS filter does it (``source/extensions/filters/http/cors``), for a route
whose xDS config carries ``envoy.filters.http.cors``: a preflight (OPTIONS with a non-empty
Origin and Access-Control-Request-Method) is answered by the mesh, 200 with the allow headers
when the origin is allowed; a preflight from another origin is forwarded, or answered with no
CORS headers when ``forward_not_matching_preflights`` is false. Any other request with an
allowed Origin gets Access-Control-Allow-Origin (the Origin itself), -Allow-Credentials and
-Expose-Headers on its response, whoever answers it; an origin that does not match gets none.

Compiled once per config update; a route without CORS pays nothing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.http.cors.v3 import cors_pb2

from tulle.engine.matching import ConfigError, StringTest, string_test
from tulle.engine.message import Request, Response


@dataclass(frozen=True)
class CorsSpec:
    """A route's CORS policy, ready to use: origin tests and the header values."""

    origins: tuple[StringTest, ...]
    allow_methods: str = ""
    allow_headers: str = ""
    expose_headers: str = ""
    max_age: str = ""
    allow_credentials: bool = False
    forward_unmatched: bool = True

    def allows(self, origin: str) -> bool:
        """Whether ``origin`` may read responses: a test that matches ``*`` allows all."""
        return any(test("*") or test(origin) for test in self.origins)

    def preflight(self, request: Request) -> Response | None:
        """The mesh's answer to a preflight; None for any other request, and for a preflight
        from an origin that does not match when such preflights are forwarded."""
        if request.method != "OPTIONS":
            return None
        origin = request.header("origin")
        wanted = request.header("access-control-request-method")
        if not origin or not wanted:
            return None
        if not self.allows(origin):
            # Envoy would still add the allow-methods/-headers/-max-age (not -origin, so the
            # browser refuses either way); the Gateway API asks for no CORS header at all.
            return None if self.forward_unmatched else Response(200, [("content-length", "0")])
        headers = [("access-control-allow-origin", origin)]
        if self.allow_credentials:
            headers.append(("access-control-allow-credentials", "true"))
        if self.allow_methods:
            methods = wanted if self.allow_methods == "*" else self.allow_methods
            headers.append(("access-control-allow-methods", methods))
        if self.allow_headers:
            asked = request.header("access-control-request-headers") or ""
            names = asked if self.allow_headers == "*" else self.allow_headers
            headers.append(("access-control-allow-headers", names))
        if self.max_age:
            headers.append(("access-control-max-age", self.max_age))
        headers.append(("content-length", "0"))
        return Response(200, headers, b"")

    def decorate(self, request: Request, response: Response) -> None:
        """Add the CORS headers to the response of a request from an allowed origin."""
        origin = request.header("origin")
        if not origin or not self.allows(origin):
            return
        drop = {"access-control-allow-origin"}
        added = [("access-control-allow-origin", origin)]
        if self.allow_credentials:
            drop.add("access-control-allow-credentials")
            added.append(("access-control-allow-credentials", "true"))
        if self.expose_headers:
            drop.add("access-control-expose-headers")
            added.append(("access-control-expose-headers", self.expose_headers))
        response.headers = [h for h in response.headers if h[0] not in drop] + added


def compile_cors(config: Any) -> CorsSpec | None:
    """A route's ``envoy.filters.http.cors`` config (CorsPolicy); None when the policy is off
    (``filter_enabled`` at 0%; shadow mode only counts in Envoy, so it does nothing here)."""
    policy = cors_pb2.CorsPolicy()
    if not config.Unpack(policy):
        raise ConfigError(f"cors filter config has type {config.type_url}")
    if policy.HasField("filter_enabled") and policy.filter_enabled.default_value.numerator == 0:
        return None
    return CorsSpec(
        origins=tuple(string_test(m) for m in policy.allow_origin_string_match),
        allow_methods=policy.allow_methods,
        allow_headers=policy.allow_headers,
        expose_headers=policy.expose_headers,
        max_age=policy.max_age,
        allow_credentials=policy.allow_credentials.value
        if policy.HasField("allow_credentials")
        else False,
        forward_unmatched=policy.forward_not_matching_preflights.value
        if policy.HasField("forward_not_matching_preflights")
        else True,
    )
