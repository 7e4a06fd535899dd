"""The rules of ``tulle check``, each from the data it reads (the control plane's metrics,
proxy-status and config; the workloads' metrics) built here: what warns and what does not."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tulle.cli.check_rules import (
    certificate_warnings,
    known_principals,
    mtls_warnings,
    policy_warnings,
    root_warnings,
    strict_workloads,
)

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def root_gauge(*expiries: datetime) -> str:
    lines = ["# TYPE tulle_ca_root_expiration_timestamp_seconds gauge"]
    for serial, expires in enumerate(expiries, 1):
        lines.append(
            f'tulle_ca_root_expiration_timestamp_seconds{{serial="{serial:x}",'
            f'subject="CN=Tulle root CA cluster.local"}} {expires.timestamp()}'
        )
    return "\n".join(lines) + "\n"


def test_a_root_expiring_within_60_days_warns_and_a_later_one_does_not():
    soon, later = NOW + timedelta(days=59), NOW + timedelta(days=61)
    (warning,) = root_warnings(root_gauge(soon, later), NOW)
    assert warning.topic == "root"
    assert warning.message.startswith(
        "root CA CN=Tulle root CA cluster.local (serial 1) expires 2027-02-03T12:00:00+00:00 "
        "(in 59 days): rotate it now"
    )
    assert root_warnings(root_gauge(later), NOW) == []
    (expired,) = root_warnings(root_gauge(NOW - timedelta(hours=1)), NOW)
    assert "expired 2026-12-06T11:00:00+00:00" in expired.message


def node(name: str, issued: datetime, life: timedelta) -> dict:
    """A proxy-status node whose last certificate was issued at ``issued`` (backdated a
    minute, as the CA does)."""
    return {
        "node": name,
        "certificate": {
            "identity": "spiffe://cluster.local/ns/default/sa/web",
            "serial": "1f",
            "notBefore": (issued - timedelta(minutes=1)).isoformat(),
            "notAfter": (issued + life).isoformat(),
        },
    }


def test_a_node_whose_certificate_expired_or_was_not_renewed_warns():
    day = timedelta(hours=24)
    fresh = node("sidecar~a", NOW - timedelta(hours=11), day)  # renewal not yet due
    late = node("sidecar~b", NOW - timedelta(hours=19), day)  # due at ~12 h: not renewed
    expired = node("sidecar~c", NOW - timedelta(hours=25), day)
    short = node("sidecar~d", NOW - timedelta(seconds=5), timedelta(seconds=20))
    without = {"node": "proxyless~e"}  # no certificate from the CA: nothing to say
    found = certificate_warnings([fresh, late, expired, short, without], NOW)
    assert [w.message.split(":")[0] for w in found] == ["node sidecar~b", "node sidecar~c"]
    assert "was due for renewal and was not renewed" in found[0].message
    assert "(in 5.0 hours)" in found[0].message
    assert "its certificate expired 2026-12-06T11:00:00+00:00" in found[1].message


def workload_metrics(plain_text: int = 0, handshake: int = 0, plain_calls: int = 0) -> str:
    lines = []
    if plain_text:
        lines.append(f'tulle_inbound_tls_refused_total{{reason="plain_text"}} {plain_text}')
    if handshake:
        lines.append(f'tulle_inbound_tls_refused_total{{reason="handshake_failed"}} {handshake}')
    lines.append(
        'tulle_requests_total{reporter="destination",source_workload="frontend",'
        'connection_security_policy="mutual_tls"} 40'
    )
    if plain_calls:
        lines.append(
            'tulle_requests_total{reporter="destination",source_workload="unknown",'
            f'connection_security_policy="none"}} {plain_calls}'
        )
    return "\n".join(lines) + "\n"


def test_callers_outside_the_mesh_of_a_strict_workload_warn():
    scrapes = {
        # refused plain text: STRICT whatever the config says
        "payment": [workload_metrics(plain_text=2), workload_metrics(plain_text=1)],
        "ledger": [workload_metrics(handshake=3, plain_calls=4)],  # STRICT by config
        "catalog": [workload_metrics(handshake=1, plain_calls=5)],  # PERMISSIVE: as it may
        "cart": [workload_metrics()],  # only mTLS callers
    }
    found = mtls_warnings(scrapes, strict={"payment", "ledger", "cart"})
    assert [w.message for w in found] == [
        "workload ledger is STRICT and refused 3 TLS connections whose client had no mesh "
        "certificate (or one the mesh does not trust: another CA, expired, another trust "
        "domain)",
        "workload ledger is STRICT but served plain-text requests (by claimed caller: unknown "
        "(4)), at a port that is not STRICT or before it became STRICT: those callers are not "
        "in the mesh",
        "workload payment is STRICT and refused 3 plain-text connections: callers outside the "
        "mesh call it; give them a sidecar or the library, or make the port PERMISSIVE",
    ]


CONFIG = [
    {"apiVersion": "tulle.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "frontend"},
     "spec": {"command": ["app"], "ports": [{"name": "http", "port": 8080}]}},
    {"apiVersion": "tulle.dev/v1alpha1", "kind": "Workload", "metadata": {"name": "catalog-v1"},
     "spec": {"command": ["app"], "serviceAccount": "catalog", "service": "catalog",
              "ports": [{"name": "http", "port": 8080}]}},
    {"apiVersion": "tulle.dev/v1alpha1", "kind": "Workload",
     "metadata": {"name": "payment", "namespace": "shop"},
     "spec": {"command": ["app"], "ports": [{"name": "http", "port": 8080},
                                             {"name": "admin", "port": 9090}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
     "metadata": {"name": "payment-admin", "namespace": "shop"},
     "spec": {"selector": {"matchLabels": {"app": "payment"}},
              "portLevelMtls": {"9090": {"mode": "STRICT"}}}},
    {"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
     "metadata": {"name": "vm"},
     "spec": {"hosts": ["vm.example.com"], "ports": [{"number": 80, "name": "http"}],
              "endpoints": [{"address": "192.0.2.1", "serviceAccount": "vm-agent"}]}},
    {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
     "metadata": {"name": "payment-callers", "namespace": "shop"},
     "spec": {"rules": [
         {"from": [{"source": {"principals": ["cluster.local/ns/default/sa/frontend",
                                               "cluster.local/ns/default/sa/frontned"]}}]},
         {"from": [{"source": {"notPrincipals": ["cluster.local/ns/ops/*", "*/sa/catalog",
                                                  "*"]}}],
          "when": [{"key": "source.principal",
                    "values": ["cluster.local/ns/default/sa/catalog-v1"]}]},
     ]}},
]  # fmt: skip


def test_a_policy_naming_a_principal_no_workload_has_warns():
    principals = known_principals(
        CONFIG,
        endpoints=[{"namespace": "lib", "service_account": "reports"}],
        identities=["spiffe://cluster.local/ns/tulle-system/sa/agent"],
    )
    assert principals == {
        "cluster.local/ns/default/sa/frontend",
        "cluster.local/ns/default/sa/catalog",  # catalog-v1's service account
        "cluster.local/ns/shop/sa/payment",
        "cluster.local/ns/default/sa/vm-agent",
        "cluster.local/ns/lib/sa/reports",
        "cluster.local/ns/tulle-system/sa/agent",
    }
    found = [w.message for w in policy_warnings(CONFIG, principals)]
    assert found == [
        "AuthorizationPolicy shop/payment-callers (rule 1 from.source.principals) names "
        "principal 'cluster.local/ns/default/sa/frontned', which no workload has",
        "AuthorizationPolicy shop/payment-callers (rule 2 from.source.notPrincipals) names "
        "principal 'cluster.local/ns/ops/*', which no workload has",
        "AuthorizationPolicy shop/payment-callers (rule 2 when source.principal values) names "
        "principal 'cluster.local/ns/default/sa/catalog-v1', which no workload has",
    ]


def test_the_trust_domain_of_the_mesh_names_the_principals():
    mesh = {"apiVersion": "tulle.dev/v1alpha1", "kind": "Mesh", "metadata": {"name": "mesh"},
            "spec": {"trustDomain": "example.org"}}  # fmt: skip
    assert "example.org/ns/default/sa/frontend" in known_principals([mesh, *CONFIG])


def test_strict_workloads_follow_peer_authentication_down_to_the_port():
    assert strict_workloads(CONFIG) == {"payment"}  # its port 9090 only
    mesh_strict = {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "default", "namespace": "tulle-system"},
                   "spec": {"mtls": {"mode": "STRICT"}}}  # fmt: skip
    assert strict_workloads([*CONFIG, mesh_strict]) == {"frontend", "catalog-v1", "payment"}
