"""AuthorizationPolicy on opaque TCP ports: the network RBAC filters (``envoy.filters.network.rbac``)
before the ``tcp_proxy`` of each inbound TCP port, with Istio's rules for HTTP-only fields
(``model.Generate(forTCP)``): an ALLOW rule using one is dropped, a DENY (or AUDIT) rule leaves
those fields out and matches on the rest. The HTTP port's filters are unchanged."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from fuzz.support.xds_checks import check_node
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.xds import types

WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: db}
spec:
  command: [db]
  ports: [{name: http, port: 8080}, {name: db, port: 5432, protocol: TCP}]
---
"""
NODE = NodeView("sidecar", "default", (), "db")
NETWORK_RBAC = "type.googleapis.com/envoy.extensions.filters.network.rbac.v3.RBAC"
FRONTEND = {
    "authenticated": {"principalName": {"exact": "spiffe://cluster.local/ns/default/sa/frontend"}}
}


def policy(name: str, action: str, rules: str) -> str:
    return (
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        f"metadata: {{name: {name}}}\nspec:\n  action: {action}\n  rules:\n{rules}---\n"
    )


def inbound(config: str) -> list[dict[str, Any]]:
    result = validate_text(WORKLOAD + config)
    assert result.model is not None, [f.format() for f in result.findings]
    resources = translate(build_snapshot(1, result.model, ()), NODE)
    check_node(resources, False)  # protoc-gen-validate rules (stat_prefix is required)
    return MessageToDict(resources[types.LISTENER]["virtualInbound"])["filterChains"]


def tcp_filters(config: str) -> list[dict[str, Any]]:
    """The TCP port's filters (the mTLS chain and the plain one carry the same)."""
    chains = [c for c in inbound(config) if c["filterChainMatch"]["destinationPort"] == 5432]
    assert len(chains) == 2
    assert chains[0]["filters"] == chains[1]["filters"]
    return list(chains[0]["filters"])


def rbac(config: str) -> dict[str, dict[str, Any]]:
    """action → the network RBAC config of the TCP port."""
    filters = tcp_filters(config)
    assert filters[-1]["name"] == "envoy.filters.network.tcp_proxy"
    found = {}
    for item in filters[:-1]:
        typed = item["typedConfig"]
        assert typed["@type"] == NETWORK_RBAC
        assert typed["statPrefix"] == "tcp."
        action = typed["rules"].get("action", "ALLOW")
        assert item["name"] == f"envoy.filters.network.rbac.{action.lower()}".replace(
            "log", "audit"
        )
        found[action] = typed["rules"].get("policies", {})
    return found


def test_without_policies_the_tcp_port_has_only_its_tcp_proxy():
    assert [f["name"] for f in tcp_filters("")] == ["envoy.filters.network.tcp_proxy"]


def test_allow_principals_is_a_network_rbac_before_the_tcp_proxy():
    config = policy(
        "callers", "ALLOW",
        "    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]\n",
    )  # fmt: skip
    filters = tcp_filters(config)
    assert [f["name"] for f in filters] == [
        "envoy.filters.network.rbac.allow",
        "envoy.filters.network.tcp_proxy",
    ]
    rules = filters[0]["typedConfig"]["rules"]
    assert rules["policies"]["default/callers[0]"] == {
        "principals": [{"andIds": {"ids": [FRONTEND]}}],
        "permissions": [{"any": True}],
    }


def test_an_allow_rule_with_http_only_fields_is_dropped_on_tcp_and_kept_on_http():
    config = policy(
        "mixed", "ALLOW",
        "    - to: [{operation: {paths: [/]}}]\n"
        "    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]\n"
        "      to: [{operation: {methods: [GET]}}]\n"
        "    - to: [{operation: {notHosts: [evil.example]}}]\n"
        "    - when: [{key: 'request.headers[x-tenant]', values: [acme]}]\n"
        "    - from: [{source: {namespaces: [ops]}}]\n",
    )  # fmt: skip
    assert list(rbac(config)["ALLOW"]) == ["default/mixed[4]"]
    # Only paths: an ALLOW that admits no TCP connection at all.
    assert rbac(policy("paths", "ALLOW", "    - to: [{operation: {paths: [/]}}]\n")) == {
        "ALLOW": {}
    }
    http = next(c for c in inbound(config) if c["filterChainMatch"]["destinationPort"] == 8080)
    manager = http["filters"][0]["typedConfig"]
    allow = manager["httpFilters"][0]["typedConfig"]["rules"]["policies"]
    assert len(allow) == 5


def test_a_deny_rule_leaves_http_only_fields_out_and_matches_on_the_rest():
    config = policy(
        "deny", "DENY",
        "    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]\n"
        "      to: [{operation: {methods: [DELETE], notPaths: [/public]}}]\n"
        "      when: [{key: 'request.headers[x-debug]', values: ['1']}]\n"
        "    - to: [{operation: {paths: [/admin]}}]\n"
        "    - to: [{operation: {ports: ['5432'], hosts: [db]}}]\n",
    )  # fmt: skip
    policies = rbac(config)["DENY"]
    assert policies["default/deny[0]"] == {
        "principals": [{"andIds": {"ids": [FRONTEND]}}],
        "permissions": [{"any": True}],
    }
    # Nothing left but the paths: every connection is denied (Istio's "deny all" on TCP).
    assert policies["default/deny[1]"] == {
        "principals": [{"any": True}],
        "permissions": [{"any": True}],
    }
    assert policies["default/deny[2]"]["permissions"] == [
        {"andRules": {"rules": [{"destinationPort": 5432}]}}
    ]


def test_tcp_fields_apply_namespaces_ip_blocks_ports_and_connection_conditions():
    config = policy(
        "tcp", "ALLOW",
        "    - from: [{source: {namespaces: [shop], notIpBlocks: [10.9.0.0/16]}}]\n"
        "      to: [{operation: {notPorts: ['9999']}}]\n"
        "      when:\n"
        "        - {key: source.principal, notValues: ['*/sa/intruder']}\n"
        "        - {key: destination.port, values: ['5432']}\n"
        "        - {key: source.ip, values: [10.0.0.0/8]}\n",
    )  # fmt: skip
    rule = rbac(config)["ALLOW"]["default/tcp[0]"]
    source = rule["principals"][0]["andIds"]["ids"]
    assert source[0]["andIds"]["ids"] == [
        {"authenticated": {"principalName": {"safeRegex": {"regex": ".*/ns/shop/.*"}}}},
        {"notId": {"directRemoteIp": {"addressPrefix": "10.9.0.0", "prefixLen": 16}}},
    ]
    assert source[1] == {
        "notId": {
            "authenticated": {"principalName": {"safeRegex": {"regex": "spiffe://.*/sa/intruder"}}}
        }
    }
    # Istio's source.ip and ipBlocks: the connection's peer (direct_remote_ip), never X-Forwarded-For
    assert source[2] == {"directRemoteIp": {"addressPrefix": "10.0.0.0", "prefixLen": 8}}
    permissions = rule["permissions"][0]["andRules"]["rules"]
    assert permissions == [
        {"andRules": {"rules": [{"notRule": {"destinationPort": 9999}}]}},
        {"destinationPort": 5432},
    ]


def test_deny_then_allow_then_audit_in_istios_order():
    config = (
        policy("a", "AUDIT", "    - to: [{operation: {methods: [GET]}}]\n")
        + policy("b", "ALLOW", "    - {}\n")
        + policy("c", "DENY", "    - from: [{source: {namespaces: [bad]}}]\n")
    )
    names = [f["name"] for f in tcp_filters(config)]
    assert names == [
        "envoy.filters.network.rbac.deny",
        "envoy.filters.network.rbac.allow",
        "envoy.filters.network.rbac.audit",
        "envoy.filters.network.tcp_proxy",
    ]
    assert rbac(config)["LOG"]["default/a[0]"]["permissions"] == [{"any": True}]
