"""AuthorizationPolicy's address, connection and header conditions as the inbound side
evaluates them (Istio's AuthorizationPolicy and conditions references): ``ipBlocks`` and
``source.ip`` on the connection's peer, ``remoteIpBlocks`` and ``remote.ip`` on the original
client (X-Forwarded-For, the Mesh's ``numTrustedProxies`` from the right), ``destination.ip`` /
``destination.port`` on the address the connection came to, ``connection.sni`` on the server
name of its TLS handshake, trust domains on the peer's SPIFFE id, and ``request.headers[...]``
with Istio's exact / prefix / suffix / presence values. Each case is a DENY policy of its own
path, translated by the control plane and compiled by the engine."""

from __future__ import annotations

import pytest

from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.inbound import InboundPolicy, connection_refusal, inbound_policies, refusal
from tulle.engine.message import Request
from tulle.engine.rbac import NO_HEADERS, Peer
from tulle.xds import types

WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: cart}
spec:
  command: [cart]
  ports: [{name: http, port: 8080}, {name: db, port: 5432, protocol: TCP}]
---
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh}
spec: {numTrustedProxies: 1}
"""
# (name, the rule under test); each denies the requests to /<name>... that it matches.
RULES = {
    "ip": "from: [{source: {ipBlocks: [10.1.0.0/16]}}]",
    "notip": "from: [{source: {notIpBlocks: [10.1.0.0/16, 192.0.2.1]}}]",
    "remote": "from: [{source: {remoteIpBlocks: [203.0.113.0/24]}}]",
    "notremote": "from: [{source: {notRemoteIpBlocks: [203.0.113.0/24]}}]",
    "whenremote": "when: [{key: remote.ip, values: [203.0.113.7]}]",
    "whensource": "when: [{key: source.ip, notValues: [10.1.0.0/16]}]",
    "destip": "when: [{key: destination.ip, values: [10.9.0.0/24]}]",
    "destport": "when: [{key: destination.port, notValues: ['8080']}]",
    "sni": "when: [{key: connection.sni, values: ['*.cart.default.svc.cluster.local']}]",
    "present": "when: [{key: 'request.headers[x-token]', values: ['*']}]",
    "prefix": "when: [{key: 'request.headers[x-token]', values: ['abc*']}]",
    "suffix": "when: [{key: 'request.headers[x-token]', notValues: ['*xyz']}]",
    "domain": "when: [{key: source.trustDomain, values: [cluster.local]}]",
    "domains": "from: [{source: {trustDomains: ['evil*']}}]",
}
POLICIES = "".join(
    f"""---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-{name}}}
spec:
  action: DENY
  rules:
    - to: [{{operation: {{paths: ["/{name}"]}}}}]
      {rule}
"""
    for name, rule in RULES.items()
)
SNI = "outbound_.8080_._.cart.default.svc.cluster.local"
FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"


def compiled(text: str) -> dict[int, InboundPolicy]:
    result = validate_text(text)
    assert result.model is not None, [f.format() for f in result.findings]
    resources = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", (), "cart")
    )
    return inbound_policies(resources[types.LISTENER], now=0.0)


@pytest.fixture(scope="module")
def policies() -> dict[int, InboundPolicy]:
    return compiled(WORKLOAD + POLICIES)


def decide(
    policy: InboundPolicy,
    path: str,
    source: str = "10.1.2.3",
    headers: tuple[tuple[str, str], ...] = (),
    local: str = "10.9.0.1",
    sni: str = "",
    principal: str | None = None,
) -> str:
    request = Request("GET", path, "cart:8080", list(headers), source_ip=source,
                      peer_principal=principal)  # fmt: skip
    request.local_ip, request.sni = local, sni
    refused = refusal(policy, request, 8080, 0.0)
    return "allowed" if refused is None else refused.reason


XFF = "x-forwarded-for"
CASES = [
    ("ipBlocks: the peer in the block", "/ip", {}, "denied"),
    ("ipBlocks: a peer outside", "/ip", {"source": "10.2.0.1"}, "allowed"),
    ("ipBlocks: X-Forwarded-For does not make the peer", "/ip",
     {"source": "10.2.0.1", "headers": ((XFF, "10.1.0.5"),)}, "allowed"),
    ("notIpBlocks: a peer in neither block", "/notip", {"source": "10.2.0.1"}, "denied"),
    ("notIpBlocks: a single address is a /32", "/notip", {"source": "192.0.2.1"}, "allowed"),
    ("notIpBlocks: a peer in the block", "/notip", {}, "allowed"),
    ("remoteIpBlocks: the client one trusted proxy names", "/remote",
     {"headers": ((XFF, "198.51.100.1, 203.0.113.7"),)}, "denied"),
    ("remoteIpBlocks: only the trusted hop counts", "/remote",
     {"headers": ((XFF, "203.0.113.7, 198.51.100.1"),)}, "allowed"),
    ("remoteIpBlocks: without X-Forwarded-For, the peer", "/remote",
     {"source": "203.0.113.9"}, "denied"),
    ("notRemoteIpBlocks: a client outside", "/notremote",
     {"headers": ((XFF, "198.51.100.1"),)}, "denied"),
    ("notRemoteIpBlocks: a client inside", "/notremote",
     {"headers": ((XFF, "203.0.113.1"),)}, "allowed"),
    ("remote.ip: the client's address", "/whenremote",
     {"headers": ((XFF, "203.0.113.7"),)}, "denied"),
    ("remote.ip: another client", "/whenremote", {"headers": ((XFF, "203.0.113.8"),)},
     "allowed"),
    ("source.ip notValues: a peer outside", "/whensource", {"source": "172.16.0.1"}, "denied"),
    ("source.ip notValues: a peer inside", "/whensource", {}, "allowed"),
    ("source.ip: an address that is not IP matches no block", "/whensource",
     {"source": "unix"}, "denied"),
    ("destination.ip: the address the connection came to", "/destip", {}, "denied"),
    ("destination.ip: another address", "/destip", {"local": "10.9.1.1"}, "allowed"),
    ("destination.ip: unknown matches no block", "/destip", {"local": ""}, "allowed"),
    ("destination.port notValues: the port itself", "/destport", {}, "allowed"),
    ("connection.sni: a suffix of the handshake's name", "/sni", {"sni": SNI}, "denied"),
    ("connection.sni: plain text has none", "/sni", {}, "allowed"),
    ("header *: presence, an empty value counts", "/present", {"headers": (("x-token", ""),)},
     "denied"),
    ("header *: absent", "/present", {}, "allowed"),
    ("header prefix", "/prefix", {"headers": (("x-token", "abcdef"),)}, "denied"),
    ("header prefix, other value", "/prefix", {"headers": (("x-token", "xabc"),)}, "allowed"),
    ("header suffix notValues", "/suffix", {"headers": (("x-token", "abc"),)}, "denied"),
    ("header suffix notValues, the suffix", "/suffix", {"headers": (("x-token", "1xyz"),)},
     "allowed"),
    ("source.trustDomain: the peer's", "/domain", {"principal": FRONTEND}, "denied"),
    ("source.trustDomain: another domain", "/domain",
     {"principal": "spiffe://cluster.local.evil/ns/default/sa/frontend"}, "allowed"),
    ("source.trustDomain: plain text has none", "/domain", {}, "allowed"),
    ("trustDomains prefix", "/domains", {"principal": "spiffe://evil.org/ns/a/sa/b"}, "denied"),
    ("trustDomains prefix, other", "/domains", {"principal": FRONTEND}, "allowed"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("path", "given", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_conditions(policies, path, given, expected):
    outcome = decide(policies[8080], path, **given)
    if expected == "denied":
        assert outcome == f"denied by policy default/deny{path.replace('/', '-')}"
    else:
        assert outcome == "allowed"


def test_two_trusted_proxies_take_the_second_address_from_the_right():
    policy = compiled(WORKLOAD.replace("numTrustedProxies: 1", "numTrustedProxies: 2") + POLICIES)
    chain = ((XFF, "203.0.113.7, 198.51.100.2, 198.51.100.1"),)
    assert decide(policy[8080], "/remote", headers=chain) == "allowed"
    chain = ((XFF, "198.51.100.9, 203.0.113.7, 198.51.100.1"),)
    assert decide(policy[8080], "/remote", headers=chain) == "denied by policy default/deny-remote"
    # fewer addresses than trusted proxies: the peer
    assert decide(policy[8080], "/remote", headers=((XFF, "203.0.113.7"),)) == "allowed"


def test_without_trusted_proxies_the_client_is_the_peer():
    """The Mesh's default (0): a caller's own X-Forwarded-For is not believed."""
    policy = compiled(WORKLOAD.replace("spec: {numTrustedProxies: 1}", "spec: {}") + POLICIES)
    assert policy[8080].trusted_hops == 0
    assert decide(policy[8080], "/remote", headers=((XFF, "203.0.113.7"),)) == "allowed"
    assert decide(policy[8080], "/remote", source="203.0.113.7") == (
        "denied by policy default/deny-remote"
    )


def test_a_tcp_port_judges_the_connection_on_its_addresses_and_sni():
    """Istio's TCP rules: a DENY rule's HTTP-only fields (paths, headers) are left out, so each
    DENY policy applies to every connection it matches on the rest; what a connection has is
    its peer (also its remote.ip: no X-Forwarded-For), the address and port it came to and
    the SNI of its handshake."""
    tcp = compiled(WORKLOAD + POLICIES)[5432]
    (deny,) = tcp.connection_rbac

    def matching(source: str, local: str = "10.9.1.1", sni: str = "") -> set[str]:
        peer = Peer(NO_HEADERS, "", source, 5432, local, None, sni, tcp.trusted_hops)
        return {p.name.removeprefix("default/deny-").removesuffix("[0]") for p in deny.policies
                if p.matches(peer)}  # fmt: skip

    # Every rule with a header condition matches any connection (the condition left out);
    # destination.port notValues 8080 matches port 5432.
    always = {"present", "prefix", "suffix", "destport"}
    assert matching("10.1.0.1") == always | {"ip", "notremote"}
    assert matching("192.0.2.1") == always | {"whensource", "notremote"}
    assert matching("203.0.113.7") == always | {"notip", "whensource", "remote", "whenremote"}
    assert matching("192.0.2.1", local="10.9.0.5") == always | {"whensource", "notremote",
                                                                 "destip"}  # fmt: skip
    assert matching("192.0.2.1", sni=SNI) == always | {"whensource", "notremote", "sni"}
    assert connection_refusal(tcp, 5432, "10.1.0.1", None, "10.9.1.1", "") is not None


def test_the_inbound_manager_carries_the_trusted_proxies():
    result = validate_text(WORKLOAD)
    assert result.model is not None
    resources = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", (), "cart")
    )
    from envoy.extensions.filters.network.http_connection_manager.v3 import (
        http_connection_manager_pb2 as hcm,
    )

    inbound = resources[types.LISTENER]["virtualInbound"]
    managers = []
    for chain in inbound.filter_chains:
        for network_filter in chain.filters:
            if network_filter.typed_config.type_url == types.HCM_TYPE:
                manager = hcm.HttpConnectionManager()
                network_filter.typed_config.Unpack(manager)
                managers.append(manager)
    assert managers
    assert all(m.xff_num_trusted_hops == 1 and m.use_remote_address.value for m in managers)


def test_a_present_match_matches_a_present_header_and_its_inversion_an_absent_one():
    """Envoy's ``present_match`` (routes' ``{}`` and ``withoutHeaders``, RBAC's ``*``)."""
    from envoy.config.route.v3 import route_components_pb2 as rc

    from tulle.engine.matching import header_test

    present = header_test(rc.HeaderMatcher(name="X-Token", present_match=True))
    absent = header_test(rc.HeaderMatcher(name="x-token", present_match=True, invert_match=True))
    assert (present({"x-token": ""}), present({})) == (True, False)
    assert (absent({"x-token": "a"}), absent({})) == (False, True)


def test_service_accounts_match_the_peer_s_account_in_its_namespace_or_the_policy_s():
    """Istio's ``serviceAccounts``: ``<namespace>/<name>``, or ``<name>`` in the policy's
    namespace, on the peer's SPIFFE id (mTLS); not a longer account's name."""
    text = WORKLOAD + (
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: accounts, namespace: default}\nspec:\n  rules:\n"
        "    - from: [{source: {serviceAccounts: [baz/sa, frontend]}}]\n"
        "    - from: [{source: {notServiceAccounts: [frontend]}}]\n"
        "      to: [{operation: {paths: [/not]}}]\n"
    )
    policy = compiled(text)[8080]

    def decide_as(account: str, path: str = "/") -> str:
        return decide(policy, path, principal=f"spiffe://cluster.local/ns/{account}")

    allowed = "allowed"
    denied = "denied: no ALLOW policy matches (default/accounts)"
    assert decide_as("baz/sa/sa") == allowed
    assert decide_as("default/sa/frontend") == allowed
    assert decide_as("other/sa/frontend") == denied
    assert decide_as("default/sa/frontend-2") == denied
    assert decide_as("default/sa/sa") == denied  # sa is baz's
    assert decide(policy, "/") == denied  # plain text: no account
    assert decide_as("default/sa/cart", "/not") == allowed
    assert decide_as("default/sa/frontend", "/not") == allowed  # by the first rule


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/items", "denied"),
        ("/api/v2/items", "denied"),
        ("/api/v1/x/items", "allowed"),  # {*} is one segment
        ("/api//items", "allowed"),
        ("/files/a/b/c.txt", "denied"),  # {**}: any number of segments
        ("/files/", "denied"),
        ("/api/{*}/items", "allowed"),  # a template, not the literal path
    ],
)
def test_path_templates_match_segments_as_envoys_uri_templates(path: str, expected: str):
    """Istio reads a path with ``{*}`` or ``{**}`` as an Envoy URI template."""
    text = WORKLOAD + (
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n"
        "metadata: {name: templates, namespace: default}\nspec:\n  action: DENY\n  rules:\n"
        "    - to: [{operation: {paths: ['/api/{*}/items', '/files/{**}']}}]\n"
    )
    outcome = decide(compiled(text)[8080], path)
    assert outcome == ("allowed" if expected == "allowed" else "denied by policy default/templates")
