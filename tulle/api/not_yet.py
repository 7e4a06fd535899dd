"""Istio and Gateway API fields of the mesh's scope that Tulle does not implement yet, each with
the finding the loader gives instead of "unknown field".

Keyed by the name of the model (message) that would hold the field and the field's name as
written in YAML. ``docs/compatibility.md`` lists each as "not yet"; a test keeps the two in step
and fails when a field listed here becomes one the model reads."""

from __future__ import annotations

LATER = "a later issue"
EDGES = f"the mesh's edges (ingress and egress gateways, TLS origination) come in {LATER}"
ORIGINATION = f"TLS origination (tls.mode SIMPLE or MUTUAL) comes in {LATER}"
AMBIENT = "Tulle has no waypoint proxies (Istio's ambient mode): use selector"
OBSERVABILITY = "metric names come from the Mesh resource"

NOT_YET_FIELDS: dict[tuple[str, str], str] = {
    # VirtualService
    ("HTTPRoute", "directResponse"): "answer with a fault abort (percentage 100) meanwhile",
    ("HTTPRoute", "mirrors"): "use mirror and mirrorPercentage (one mirror per route)",
    ("HTTPMatchRequest", "scheme"): "match on the port or the authority meanwhile",
    ("HTTPMatchRequest", "sourceNamespace"): "match on sourceLabels meanwhile",
    ("HTTPMatchRequest", "statPrefix"): OBSERVABILITY,
    ("HTTPRedirect", "derivePort"): "set port explicitly",
    ("HTTPRewrite", "uriRegexRewrite"): "rewrite a prefix with uri meanwhile",
    ("HTTPRetry", "retryRemoteLocalities"): (
        "a retry stays within the priority (locality) its call started in"
    ),
    ("L4MatchAttributes", "sourceNamespace"): "match on sourceLabels meanwhile",
    ("L4MatchAttributes", "gateways"): EDGES,
    # DestinationRule
    ("TrafficPolicy", "tunnel"): EDGES,
    ("TrafficPolicy", "proxyProtocol"): EDGES,
    ("ConsistentHash", "ringHash"): "use minimumRingSize meanwhile",
    ("ConsistentHash", "maglev"): "use the ring hash (consistentHash without maglev)",
    ("TCPSettings", "maxConnectionDuration"): "connections live until idle (idleTimeout)",
    ("TCPSettings", "idleTimeout"): "use connectionPool.http.idleTimeout",
    ("HTTPSettings", "useClientProtocol"): "the sidecar speaks the port's protocol upstream",
    ("HTTPSettings", "maxConcurrentStreams"): "use http2MaxRequests",
    ("OutlierDetection", "splitExternalLocalOriginErrors"): "connect failures count as 5xx",
    ("OutlierDetection", "consecutiveLocalOriginFailures"): "connect failures count as 5xx",
    ("ClientTLSSettings", "clientCertificate"): ORIGINATION,
    ("ClientTLSSettings", "privateKey"): ORIGINATION,
    ("ClientTLSSettings", "caCertificates"): ORIGINATION,
    ("ClientTLSSettings", "caCrl"): ORIGINATION,
    ("ClientTLSSettings", "credentialName"): ORIGINATION,
    ("ClientTLSSettings", "subjectAltNames"): ORIGINATION,
    ("ClientTLSSettings", "sni"): ORIGINATION,
    ("ClientTLSSettings", "insecureSkipVerify"): ORIGINATION,
    # ServiceEntry
    ("WorkloadEntry", "network"): "Tulle has one network",
    # AuthorizationPolicy
    ("AuthorizationPolicySpec", "targetRef"): AMBIENT,
    ("AuthorizationPolicySpec", "targetRefs"): AMBIENT,
    ("AuthorizationPolicySpec", "provider"): f"external authorization (CUSTOM) comes in {LATER}",
    # Gateway API HTTPRoute
    ("HTTPRouteRule", "retry"): "use a VirtualService's retries (GEP-1731 is experimental)",
    ("HTTPRouteRule", "sessionPersistence"): "use a DestinationRule's consistentHash",
    ("HTTPRouteFilter", "extensionRef"): "Tulle has no filter extensions",
    ("HTTPRouteFilter", "externalAuth"): f"external authorization comes in {LATER}",
}
"""(model name, field) -> what to do instead, after "not supported yet"."""


def not_yet_message(model_name: str, field: str) -> str | None:
    """The finding for a field Tulle does not implement yet, or None for an unknown field."""
    reason = NOT_YET_FIELDS.get((model_name, field))
    if reason is None:
        return None
    return f"{field} is not supported yet: {reason}"
