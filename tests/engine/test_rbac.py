"""Inbound authorization: AuthorizationPolicies translated by the control plane into RBAC
filters, compiled and evaluated by the engine with Istio's semantics."""

from __future__ import annotations

from tests.control.test_translate import POLICY, policy_resources
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


def test_a_new_config_keeps_the_rate_limit_bucket_unless_the_limit_changed():
    # Every config the control plane pushes comes through inbound_policies (an endpoint
    # registered anywhere in the mesh is one): it must not refill a spent bucket.
    listeners = policy_resources()[types.LISTENER]
    first = inbound_policies(listeners, now=0.0)
    spent = first[8080].bucket
    assert spent is not None
    assert [spent.take(0.0) for _ in range(6)] == [True] * 5 + [False]  # burst: 5
    again = inbound_policies(listeners, now=0.0, previous=first)
    assert again[8080].bucket is spent
    assert spent.take(0.0) is False
    # A new limit is a new bucket, full.
    bigger = POLICY.replace("limit: {requests: 30, unit: minute, burst: 5}",
                            "limit: {requests: 30, unit: minute, burst: 6}")  # fmt: skip
    assert bigger != POLICY
    changed = inbound_policies(
        policy_resources(text=bigger)[types.LISTENER], now=0.0, previous=again
    )
    fresh = changed[8080].bucket
    assert fresh is not None
    assert fresh is not spent
    assert [fresh.take(0.0) for _ in range(7)] == [True] * 6 + [False]


def test_methods_match_a_request_as_the_fronts_build_it():
    # An HTTP/1.1 request has no ":method" among its headers: the policy's `methods` must
    # still see the request line's method (the shop's payment policy refused every payment).
    from tulle.engine.inbound import refusal
    from tulle.engine.message import Request

    def asked(method: str) -> Request:
        headers = [("host", "payment:8080"), ("x-tenant", "acme")]
        return Request(method, "/", "payment:8080", headers, peer_principal=FRONTEND)

    policy = policies()[8080]
    policy.bucket = None  # authorization alone
    assert refusal(policy, asked("GET"), 8080, now=0.0) is None
    refused = refusal(policy, asked("DELETE"), 8080, now=0.0)
    assert refused is not None
    assert refused.flag == "RBAC"
