"""AuthorizationPolicy on an opaque TCP port in the data plane: the translated network RBAC
compiled per port and judged per connection (:func:`connection_refusal`) on what a connection
has; network RBAC the sidecar cannot honour is refused with the reason (the NACK)."""

from __future__ import annotations

from typing import Any

import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.config.rbac.v3 import rbac_pb2
from envoy.config.route.v3 import route_components_pb2 as rc
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2
from envoy.type.matcher.v3 import metadata_pb2, path_pb2, string_pb2
from google.protobuf import any_pb2, duration_pb2

from tests.control.test_translate_authz_tcp import WORKLOAD, policy
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.inbound import connection_refusal, inbound_policies
from tulle.engine.matching import ConfigError
from tulle.proxy.app import Proxy
from tulle.xds import types

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
OPS = "spiffe://cluster.local/ns/ops/sa/admin"


def policies(config: str) -> dict[int, Any]:
    result = validate_text(WORKLOAD + config)
    assert result.model is not None, [f.format() for f in result.findings]
    resources = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", (), "db")
    )
    return inbound_policies(resources[types.LISTENER], now=0.0)


CONFIG = policy(
    "callers", "ALLOW",
    "    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]\n"
    "    - from: [{source: {namespaces: [ops], notIpBlocks: [10.66.0.0/16]}}]\n"
    "    - to: [{operation: {paths: [/health]}}]\n",
) + policy(
    "no-debug", "DENY",
    "    - from: [{source: {principals: ['*/sa/admin']}}]\n"
    "      to: [{operation: {methods: [DELETE]}}]\n"
    "      when: [{key: destination.port, values: ['5433']}]\n",
)  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "source", "port", "expected"),
    [
        (FRONTEND, "10.0.0.1", 5432, None),
        (OPS, "10.0.0.1", 5432, None),
        (OPS, "10.66.1.1", 5432, "none"),  # notIpBlocks
        ("spiffe://cluster.local/ns/default/sa/backend", "10.0.0.1", 5432, "none"),
        (None, "10.0.0.1", 5432, "none"),  # plain text: principals match nothing
        # The DENY rule's methods are left out on TCP: it matches the principal and the port.
        (OPS, "10.0.0.1", 5433, "default/no-debug"),
        (FRONTEND, "10.0.0.1", 5433, None),
    ],
)
def test_connections_are_judged_on_the_peer_and_the_port(principal, source, port, expected):
    tcp = policies(CONFIG)[5432]
    assert tcp.tcp
    assert tcp.rbac == ()
    denial = connection_refusal(tcp, port, source, principal)
    assert (denial[0] if denial else None) == expected
    if expected == "none":
        assert denial is not None
        assert denial[1] == "denied: no ALLOW policy matches (default/callers)"


def test_the_http_port_keeps_its_per_request_rbac_and_has_no_connection_check():
    http = policies(CONFIG)[8080]
    assert not http.tcp
    assert http.connection_rbac == ()
    assert [f.action for f in http.rbac] == ["DENY", "ALLOW"]
    assert connection_refusal(http, 8080, "10.0.0.1", None) is None


def test_a_port_without_policies_admits_every_connection():
    assert connection_refusal(policies("")[5432], 5432, "10.0.0.1", None) is None


def listener(*filters: Any) -> dict[str, Any]:
    chain = listener_components_pb2.FilterChain(filters=list(filters))
    chain.filter_chain_match.destination_port.value = 5432
    return {"virtualInbound": listener_pb2.Listener(name="virtualInbound", filter_chains=[chain])}


def network_rbac(config: Any) -> Any:
    packed = any_pb2.Any()
    packed.Pack(config)
    return listener_components_pb2.Filter(name="envoy.filters.network.rbac", typed_config=packed)


def rules_with(permission: Any) -> Any:
    rules = rbac_pb2.RBAC(action=rbac_pb2.RBAC.ALLOW)
    rules.policies["default/p[0]"].CopyFrom(
        rbac_pb2.Policy(principals=[rbac_pb2.Principal(any=True)], permissions=[permission])
    )
    return rules


HEADER = rbac_pb2.Permission(
    header=rc.HeaderMatcher(name=":method", string_match=string_pb2.StringMatcher(exact="GET"))
)


@pytest.mark.parametrize(
    ("config", "reason"),
    [
        (
            network_rbac_pb2.RBAC(stat_prefix="tcp.", rules=rules_with(HEADER)),
            "inbound port 5432 filter 'envoy.filters.network.rbac': network RBAC policy "
            "'default/p[0]' matches on 'header', which a TCP connection does not have",
        ),
        (
            network_rbac_pb2.RBAC(
                stat_prefix="tcp.",
                rules=rules_with(
                    rbac_pb2.Permission(
                        not_rule=rbac_pb2.Permission(url_path=path_pb2.PathMatcher())
                    )
                ),
            ),
            "matches on 'url_path'",
        ),
        (
            network_rbac_pb2.RBAC(stat_prefix="tcp.", shadow_rules=rules_with(HEADER)),
            "network RBAC 'shadow_rules' is not supported",
        ),
        (
            network_rbac_pb2.RBAC(stat_prefix="tcp.", delay_deny=duration_pb2.Duration(seconds=1)),
            "network RBAC 'delay_deny' is not supported",
        ),
        (
            network_rbac_pb2.RBAC(
                stat_prefix="tcp.",
                rules=rules_with(rbac_pb2.Permission(metadata=metadata_pb2.MetadataMatcher())),
            ),
            "network RBAC permission 'metadata' is not supported",
        ),
    ],
)
def test_network_rbac_the_sidecar_cannot_honour_is_refused_with_the_reason(config, reason):
    with pytest.raises(ConfigError) as refused:
        inbound_policies(listener(network_rbac(config)), now=0.0)
    assert reason in str(refused.value)


def test_an_unknown_network_filter_on_the_inbound_listener_is_refused():
    unknown = any_pb2.Any()
    unknown.Pack(base_pb2.Metadata())
    item = listener_components_pb2.Filter(
        name="envoy.filters.network.ext_authz", typed_config=unknown
    )
    with pytest.raises(ConfigError, match=r"network filter 'envoy\.filters\.network\.ext_authz'"):
        inbound_policies(listener(item), now=0.0)


def test_network_rbac_without_rules_enforces_nothing():
    tcp = inbound_policies(listener(network_rbac(network_rbac_pb2.RBAC(stat_prefix="tcp."))), 0.0)
    assert connection_refusal(tcp[5432], 5432, "10.0.0.1", None) is None


def test_the_sidecar_nacks_it_with_the_reason():
    result = validate_text(WORKLOAD)
    assert result.model is not None
    view = NodeView("sidecar", "default", (), "db")
    resources = dict(translate(build_snapshot(1, result.model, ()), view))
    bad = network_rbac_pb2.RBAC(stat_prefix="tcp.", rules=rules_with(HEADER))
    inbound = listener_pb2.Listener()
    inbound.CopyFrom(resources[types.LISTENER]["virtualInbound"])
    for chain in inbound.filter_chains:
        if chain.filter_chain_match.destination_port.value == 5432:
            chain.filters.insert(0, network_rbac(bad))
    resources[types.LISTENER] = {**resources[types.LISTENER], "virtualInbound": inbound}
    proxy = Proxy("127.0.0.1:1", "sidecar~127.0.0.1~db-0.default~default.svc.cluster.local")
    reason = proxy.accept(resources, "2")
    assert reason is not None
    assert "inbound port 5432" in reason
    assert "matches on 'header', which a TCP connection does not have" in reason
    assert proxy.inbound == {}  # nothing of the refused config was installed
