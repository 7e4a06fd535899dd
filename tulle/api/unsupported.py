"""Istio and Gateway API config Tulle does not implement, each named precisely.

Two lists, read by the loader before schema validation:

- kinds and fields at the mesh's edges (ingress and egress gateways, TLS origination, end-user
  JWT, external authorization), which a later issue brings: one ERROR each, naming what is not
  supported yet, never a "did you mean" (the field is taken out before the schema sees it, so
  that the schema does not report it a second time as unknown);
- Istio kinds Tulle ignores (EnvoyFilter, Sidecar, Telemetry, ...): one WARNING each, saying the
  document is ignored (it is not loaded, so neither ``tulle apply`` nor the control plane stores
  it).

Nothing here changes a resource that has no such field."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

from tulle.api.source import FieldPath

GATEWAY_API = "gateway.networking.k8s.io"
NETWORKING = "networking.istio.io"
SECURITY = "security.istio.io"

LATER = "a later issue"
EDGES = f"ingress and egress gateways come in {LATER}"
JWT = f"end-user authentication (JWT) comes in {LATER}"

OUT_OF_SCOPE_KINDS: dict[tuple[str, str], str] = {
    (NETWORKING, "Gateway"): f"Istio Gateway is not supported yet: {EDGES}",
    (GATEWAY_API, "Gateway"): f"Gateway API Gateway is not supported yet: {EDGES}",
    (GATEWAY_API, "GatewayClass"): f"Gateway API GatewayClass is not supported yet: {EDGES}",
    (GATEWAY_API, "TLSRoute"): f"TLSRoute is not supported yet (routes of gateways): {EDGES}",
    (GATEWAY_API, "TCPRoute"): f"TCPRoute is not supported yet (routes of gateways): {EDGES}",
    (GATEWAY_API, "UDPRoute"): f"UDPRoute is not supported yet (routes of gateways): {EDGES}",
    (GATEWAY_API, "ListenerSet"): f"ListenerSet is not supported yet: {EDGES}",
    (GATEWAY_API, "BackendTLSPolicy"): (
        f"BackendTLSPolicy (TLS origination) is not supported yet: it comes in {LATER}"
    ),
    (SECURITY, "RequestAuthentication"): f"RequestAuthentication is not supported yet: {JWT}",
}
"""Kinds at the mesh's edges: an ERROR each."""

IGNORED_KINDS: dict[tuple[str, str], str] = {
    (NETWORKING, "EnvoyFilter"): "Envoy configuration patches do not apply to Tulle's proxies",
    (NETWORKING, "Sidecar"): "Tulle sends every sidecar the whole mesh's config",
    (NETWORKING, "WorkloadEntry"): "use a ServiceEntry's endpoints or a Workload",
    (NETWORKING, "WorkloadGroup"): "use a Workload",
    (NETWORKING, "ProxyConfig"): "proxy settings come from tulle proxy's options",
    ("telemetry.istio.io", "Telemetry"): "metrics, logs and traces come from the Mesh resource",
    ("extensions.istio.io", "WasmPlugin"): "Tulle's proxies do not run Wasm",
    (GATEWAY_API, "ReferenceGrant"): "Tulle does not check cross-namespace references",
}
"""Kinds Tulle does not implement and ignores: a WARNING each (the reason after the colon)."""


def kind_message(group: str, kind: str, data: Any) -> tuple[bool, str] | None:
    """``(is_error, message)`` for a kind of these lists, else None."""
    if (group, kind) in OUT_OF_SCOPE_KINDS:
        return True, OUT_OF_SCOPE_KINDS[(group, kind)]
    if (group, kind) in IGNORED_KINDS:
        reason = IGNORED_KINDS[(group, kind)]
        return False, f"{kind} is ignored: Tulle does not implement it ({reason}); not applied"
    if (group, kind) == (GATEWAY_API, "GRPCRoute"):
        parents = _list(_get(data, "spec", "parentRefs"))
        if parents and all(is_gateway_parent(p) for p in parents):
            # A warning, as for an HTTPRoute: the Gateway may be another controller's.
            return False, f"GRPCRoute attached to a Gateway is not supported yet: {EDGES}; ignored"
    return None


def is_gateway_parent(parent: Any) -> bool:
    """A Gateway API parentRef that names a Gateway: ``kind`` defaults to ``Gateway`` and
    ``group`` to ``gateway.networking.k8s.io`` (Gateway API, ParentReference)."""
    if not isinstance(parent, dict):
        return False
    return parent.get("kind", "Gateway") == "Gateway" and parent.get("group", GATEWAY_API) in (
        GATEWAY_API,
    )


def _get(data: Any, *steps: str) -> Any:
    for step in steps:
        if not isinstance(data, dict):
            return None
        data = data.get(step)
    return data


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dicts(value: Any) -> Iterator[tuple[int, dict[str, Any]]]:
    for index, item in enumerate(_list(value)):
        if isinstance(item, dict):
            yield index, item


Found = list[tuple[FieldPath, str, bool]]
"""Each finding's path, message, and whether it is an error (else a warning)."""


def gateway_parent(name: object) -> str:
    """The WARNING of an HTTPRoute parentRef that names a Gateway: the route (for that parent)
    is ignored, not refused, as on Kubernetes another controller may implement the Gateway."""
    return (
        f"attaching to Gateway {name!r} (an ingress route) is not supported yet: {EDGES}; a "
        "parentRef without kind names a Gateway (kind: Service makes a mesh route); ignored"
    )


def _http_route(spec: dict[str, Any], found: Found) -> bool:
    """An HTTPRoute attached to Gateways only is an ingress route, not the mesh's config: one
    WARNING per parent, and the rest (backends of kinds a gateway may take) is not read. A
    warning, not an error: on Kubernetes the Gateway is another controller's, whose routes the
    webhook and the control plane must leave alone."""
    parents = spec.get("parentRefs")
    if not isinstance(parents, list) or not parents:
        return True
    if not all(is_gateway_parent(parent) for parent in parents):
        return True
    for index, parent in enumerate(parents):
        found.append((("spec", "parentRefs", index), gateway_parent(parent.get("name")), False))
    return False


GATEWAY_BOUND = (
    f"VirtualServices bound to a gateway are not supported yet ({EDGES}); "
    "only 'mesh' (the sidecars) applies"
)
TLS_ORIGINATION = f"TLS origination (tls.mode {{mode}}) is not supported yet: it comes in {LATER}"


def _virtual_service(spec: dict[str, Any], found: Found) -> bool:
    gateways = spec.get("gateways")
    if isinstance(gateways, list) and any(g != "mesh" for g in gateways):
        found.append((("spec", "gateways"), GATEWAY_BOUND, True))
        if "mesh" not in gateways:
            return False  # a gateway's only: not the mesh's config at all
        del spec["gateways"]
    for i, route in _dicts(spec.get("http")):
        for j, match in _dicts(route.get("match")):
            if "gateways" in match:
                names = match["gateways"]
                if not (isinstance(names, list) and all(g == "mesh" for g in names)):
                    found.append((("spec", "http", i, "match", j, "gateways"), GATEWAY_BOUND, True))
                del match["gateways"]
    if "tls" in spec:
        found.append(
            (
                ("spec", "tls"),
                f"tls routes (TLS routed by SNI) are not supported yet: {EDGES}",
                True,
            )
        )
        del spec["tls"]
    return True


def _traffic_policy(policy: Any, path: FieldPath, found: Found) -> bool:
    if not isinstance(policy, dict):
        return True
    tls = policy.get("tls")
    if isinstance(tls, dict) and tls.get("mode") in ("SIMPLE", "MUTUAL"):
        found.append(((*path, "tls", "mode"), TLS_ORIGINATION.format(mode=tls["mode"]), True))
        del policy["tls"]
    for i, setting in _dicts(policy.get("portLevelSettings")):
        _traffic_policy(setting, (*path, "portLevelSettings", i), found)
    return True


def _destination_rule(spec: dict[str, Any], found: Found) -> bool:
    _traffic_policy(spec.get("trafficPolicy"), ("spec", "trafficPolicy"), found)
    for i, subset in _dicts(spec.get("subsets")):
        _traffic_policy(subset.get("trafficPolicy"), ("spec", "subsets", i, "trafficPolicy"), found)
    return True


def _authorization_policy(spec: dict[str, Any], found: Found) -> bool:
    if spec.get("action") == "CUSTOM":
        found.append(
            (
                ("spec", "action"),
                f"action CUSTOM (external authorization) is not supported yet: it comes in {LATER}",
                True,
            )
        )
        spec.pop("action")
        spec.pop("provider", None)
    for i, rule in _dicts(spec.get("rules")):
        for j, source in _dicts(rule.get("from")):
            fields = source.get("source")
            if not isinstance(fields, dict):
                continue
            for name in ("requestPrincipals", "notRequestPrincipals"):
                if name in fields:
                    where: FieldPath = ("spec", "rules", i, "from", j, "source", name)
                    found.append((where, f"{name} is not supported yet: {JWT}", True))
                    del fields[name]
        for k, condition in _dicts(rule.get("when")):
            key = condition.get("key")
            if isinstance(key, str) and key.startswith("request.auth."):
                path = ("spec", "rules", i, "when", k, "key")
                found.append((path, f"condition key {key!r} is not supported yet: {JWT}", True))
                # A key the schema takes, so that the conditions after it keep their
                # indices (the resource is refused for the finding above anyway).
                condition["key"] = "request.headers[x-unsupported]"
    return True


_FIELDS = {
    (GATEWAY_API, "HTTPRoute"): _http_route,
    (NETWORKING, "VirtualService"): _virtual_service,
    (NETWORKING, "DestinationRule"): _destination_rule,
    (SECURITY, "AuthorizationPolicy"): _authorization_policy,
}


def strip_fields(
    group: str, kind: str, data: dict[str, Any]
) -> tuple[dict[str, Any] | None, Found]:
    """``data`` without the out-of-scope fields of its kind (a copy when any is found), and
    each one's path and message; None instead of the data when what is left is not the mesh's
    config (a VirtualService bound to gateways only, an HTTPRoute attached to Gateways only)."""
    check = _FIELDS.get((group, kind))
    spec = data.get("spec")
    if check is None or not isinstance(spec, dict):
        return data, []
    found: Found = []
    copied = copy.deepcopy(data)
    keep = check(copied["spec"], found)
    if not keep:
        return None, found
    return (copied, found) if found else (data, [])
