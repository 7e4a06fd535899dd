"""Authorization by the caller's identity, as the inbound side evaluates it: the policies of
tests/control/test_translate_authz.py, translated and compiled, against requests whose
``peer_principal`` the front took from the mTLS handshake (None over plain text: no principal
or namespace rule matches, as in Istio)."""

from __future__ import annotations

import pytest

from tests.control.test_translate_authz import identity_resources
from tulle.engine.inbound import InboundPolicy, inbound_policies, refusal
from tulle.engine.message import Request
from tulle.xds import types


def spiffe(namespace: str, account: str, domain: str = "cluster.local") -> str:
    return f"spiffe://{domain}/ns/{namespace}/sa/{account}"


FRONTEND = spiffe("default", "frontend")


@pytest.fixture(scope="module")
def policy() -> InboundPolicy:
    return inbound_policies(identity_resources()[types.LISTENER], now=0.0)[8080]


def decide(policy: InboundPolicy, principal: str | None, path: str = "/pay", method: str = "POST"):
    request = Request(method, path, "payment:8080", [(":method", method)], peer_principal=principal)
    refused = refusal(policy, request, 8080, 0.0)
    return "allowed" if refused is None else refused.reason


NO_MATCH = "denied: no ALLOW policy matches (default/callers)"

CASES = [
    ("frontend's principal is admitted", FRONTEND, "/pay", "POST", "allowed"),
    ("another workload of the namespace is not", spiffe("default", "cart"), "/pay", "POST",
     NO_MATCH),
    ("the same account in another trust domain is not", spiffe("default", "frontend", "evil.org"),
     "/pay", "POST", NO_MATCH),
    ("plain text has no principal", None, "/pay", "POST", NO_MATCH),
    ("namespaces: any account of shop", spiffe("shop", "checkout"), "/pay", "POST", "allowed"),
    ("notPrincipals: but not the intruder", spiffe("shop", "intruder"), "/pay", "POST",
     NO_MATCH),
    ("prefix wildcard on a path", spiffe("ops", "oncall"), "/admin", "POST", "allowed"),
    ("prefix wildcard, other path", spiffe("ops", "oncall"), "/pay", "POST", NO_MATCH),
    ("suffix wildcard in any namespace", spiffe("audit", "auditor"), "/pay", "GET", "allowed"),
    ("suffix wildcard, other method", spiffe("audit", "auditor"), "/pay", "POST", NO_MATCH),
    ("namespace wildcard", spiffe("team-blue", "api"), "/pay", "POST", "allowed"),
    ("when notValues on source.principal", spiffe("team-blue", "untrusted"), "/pay", "POST",
     NO_MATCH),
    ("when source.namespace and source.principal", spiffe("batch", "job-nightly"), "/pay",
     "POST", "allowed"),
    ("when: both conditions must hold", spiffe("batch", "cron"), "/pay", "POST", NO_MATCH),
    ("a namespace named like another's prefix", spiffe("shopping", "checkout"), "/pay", "POST",
     NO_MATCH),
    # DENY: notNamespaces matches every caller outside those namespaces, plain text included.
    ("DENY notNamespaces: an outsider", spiffe("elsewhere", "x"), "/forbidden/1", "GET",
     "denied by policy default/no-outsiders"),
    ("DENY notNamespaces: plain text too", None, "/forbidden/1", "GET",
     "denied by policy default/no-outsiders"),
    ("DENY notNamespaces: an insider passes it", FRONTEND, "/forbidden/1", "GET", "allowed"),
    ("DENY principals *: any authenticated peer", FRONTEND, "/plain-only", "GET",
     "denied by policy default/no-outsiders"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("principal", "path", "method", "expected"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_identity_rules(policy, principal, path, method, expected):
    assert decide(policy, principal, path, method) == expected


def test_principals_star_does_not_match_plain_text(policy):
    # "*" means any authenticated peer: a plain-text caller is not denied by that rule (and
    # then matches no ALLOW rule).
    assert decide(policy, None, "/plain-only", "GET") == NO_MATCH


def test_a_request_has_no_principal_unless_the_front_sets_one():
    assert Request("GET", "/", "payment", []).peer_principal is None
