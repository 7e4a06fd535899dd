"""Inbound authorization: AuthorizationPolicies translated by the control plane into RBAC
filters, compiled and evaluated by the engine with Istio's semantics."""

from __future__ import annotations

from tests.control.test_translate import policy_resources
from tulle.engine.inbound import inbound_policies
from tulle.engine.rbac import Peer, authorize
from tulle.xds import types


def policies():
    return inbound_policies(policy_resources()[types.LISTENER], now=0.0)


def peer(path="/", method="GET", principal=None, tenant="acme", source="10.0.0.9"):
    headers = {":method": method, "x-tenant": tenant}
    return Peer(headers, path, source, 8080, principal=principal)


FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"


def test_the_allow_policy_needs_its_principal_method_and_header():
    rbac = policies()[8080].rbac
    assert authorize(rbac, peer(principal=FRONTEND)) is None
    refused = authorize(rbac, peer(principal=None))  # plain text: no principal
    assert refused is not None
    assert (refused.status, refused.flag) == (403, "RBAC")
    assert refused.reason == "denied: no ALLOW policy matches (default/from-frontend)"
    assert authorize(rbac, peer(principal=FRONTEND, method="DELETE")) is not None
    assert authorize(rbac, peer(principal=FRONTEND, tenant="other")) is not None


def test_a_matching_deny_policy_wins_and_is_named():
    refused = authorize(policies()[8080].rbac, peer("/admin/users", principal=FRONTEND))
    assert refused is not None
    assert refused.reason == "denied by policy default/deny-admin"


def test_the_rate_limit_bucket_is_there_too():
    bucket = policies()[8080].bucket
    assert bucket is not None
    assert (bucket.spec.max_tokens, bucket.spec.interval) == (5, 2.0)
