"""Authorization by identity: AuthorizationPolicy ``principals``, ``notPrincipals``,
``namespaces``, ``notNamespaces`` and ``when`` on ``source.principal`` / ``source.namespace``
as the RBAC principals Istio generates (``authenticated.principal_name`` on the peer
certificate's SPIFFE id)."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from fuzz.support.xds_checks import check_node
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.xds import types
from tulle.xds.node import Mode

IDENTITY_POLICIES = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: payment}
spec:
  command: [payment]
  ports: [{name: http, port: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: callers}
spec:
  selector: {matchLabels: {app: payment}}
  rules:
    - from: [{source: {principals: [cluster.local/ns/default/sa/frontend]}}]
    - from: [{source: {namespaces: [shop], notPrincipals: [cluster.local/ns/shop/sa/intruder]}}]
    - from: [{source: {principals: ["cluster.local/ns/ops/*"]}}]
      to: [{operation: {paths: [/admin]}}]
    - from: [{source: {principals: ["*/sa/auditor"]}}]
      to: [{operation: {methods: [GET]}}]
    - from: [{source: {namespaces: ["team-*"]}}]
      when:
        - {key: source.principal, notValues: ["*/sa/untrusted"]}
    - when:
        - {key: source.namespace, values: [batch]}
        - {key: source.principal, values: ["cluster.local/ns/batch/sa/job-*"]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-outsiders}
spec:
  selector: {matchLabels: {app: payment}}
  action: DENY
  rules:
    - from: [{source: {notNamespaces: [default, shop, ops, batch, "team-*"]}}]
      to: [{operation: {paths: ["/forbidden*"]}}]
    - from: [{source: {principals: ["*"]}}]
      to: [{operation: {paths: [/plain-only]}}]
"""


def identity_resources(mode: Mode = "sidecar") -> Any:
    result = validate_text(IDENTITY_POLICIES)
    assert result.model is not None, [f.format() for f in result.findings]
    translated = translate(
        build_snapshot(1, result.model, ()), NodeView(mode, "default", (), "payment")
    )
    check_node(translated, mode == "proxyless")
    return translated


def authenticated(matcher: dict[str, Any]) -> dict[str, Any]:
    return {"authenticated": {"principalName": matcher}}


def regex(pattern: str) -> dict[str, Any]:
    return {"safeRegex": {"regex": pattern}}


def rbac(action: str) -> dict[str, Any]:
    listener = MessageToDict(identity_resources()[types.LISTENER]["virtualInbound"])
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    (found,) = (f for f in manager["httpFilters"] if f["name"].endswith(action))
    rules: dict[str, Any] = found["typedConfig"]["rules"]
    return rules


def principals(rules: dict[str, Any], name: str) -> Any:
    return rules["policies"][name]["principals"]


def test_principals_are_spiffe_ids_with_istios_wildcards():
    rules = rbac("allow")
    assert principals(rules, "default/callers[0]") == [
        {
            "andIds": {
                "ids": [authenticated({"exact": "spiffe://cluster.local/ns/default/sa/frontend"})]
            }
        }
    ]
    assert principals(rules, "default/callers[2]") == [
        {"andIds": {"ids": [authenticated({"prefix": "spiffe://cluster.local/ns/ops/"})]}}
    ]
    assert principals(rules, "default/callers[3]") == [
        {"andIds": {"ids": [authenticated(regex("spiffe://.*/sa/auditor"))]}}
    ]
    deny = rbac("deny")
    assert principals(deny, "default/no-outsiders[1]") == [
        {"andIds": {"ids": [authenticated(regex(".+"))]}}
    ]


def test_namespaces_are_a_regex_on_the_principal_and_not_fields_negate():
    rules = rbac("allow")
    assert principals(rules, "default/callers[1]") == [
        {
            "andIds": {
                "ids": [
                    authenticated(regex(".*/ns/shop/.*")),
                    {
                        "notId": authenticated(
                            {"exact": "spiffe://cluster.local/ns/shop/sa/intruder"}
                        )
                    },
                ]
            }
        }
    ]
    deny = rbac("deny")
    (negated,) = principals(deny, "default/no-outsiders[0]")[0]["andIds"]["ids"]
    assert negated == {
        "notId": {
            "orIds": {
                "ids": [
                    authenticated(regex(".*/ns/default/.*")),
                    authenticated(regex(".*/ns/shop/.*")),
                    authenticated(regex(".*/ns/ops/.*")),
                    authenticated(regex(".*/ns/batch/.*")),
                    authenticated(regex(".*/ns/team\\-.*/.*")),
                ]
            }
        }
    }


def test_when_conditions_on_the_source_identity():
    rules = rbac("allow")
    namespaces, condition = principals(rules, "default/callers[4]")[0]["andIds"]["ids"]
    assert namespaces == {"andIds": {"ids": [authenticated(regex(".*/ns/team\\-.*/.*"))]}}
    assert condition == {"notId": authenticated(regex("spiffe://.*/sa/untrusted"))}
    anyone, namespace, principal = principals(rules, "default/callers[5]")[0]["andIds"]["ids"]
    assert anyone == {"any": True}
    assert namespace == authenticated(regex(".*/ns/batch/.*"))
    assert principal == authenticated({"prefix": "spiffe://cluster.local/ns/batch/sa/job-"})


def test_a_trust_domain_other_than_the_default_is_written_in_the_principal():
    text = IDENTITY_POLICIES.replace(
        "cluster.local/ns/default/sa/frontend", "example.org/ns/default/sa/frontend"
    )
    result = validate_text(text)
    assert result.model is not None
    translated = translate(
        build_snapshot(1, result.model, ()), NodeView("sidecar", "default", (), "payment")
    )
    listener = MessageToDict(translated[types.LISTENER]["virtualInbound"])
    manager = listener["filterChains"][0]["filters"][0]["typedConfig"]
    allow = next(f for f in manager["httpFilters"] if f["name"].endswith("allow"))
    first = allow["typedConfig"]["rules"]["policies"]["default/callers[0]"]["principals"]
    assert first[0]["andIds"]["ids"][0] == authenticated(
        {"exact": "spiffe://example.org/ns/default/sa/frontend"}
    )
