"""AuthorizationPolicy's source fields and ``when`` keys as Istio's own files write them (its
validation testdata, ``authz-valid.yaml``, in ../shared/corpus), and the findings for values
Istio's generators refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api import Severity, validate_paths, validate_text

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
AUTHZ_VALID = (
    CORPUS / "istio-validation-testdata/pkg/config/validation/testdata/crds/authz-valid.yaml"
)


def test_istio_valid_policy_fields_are_read_and_only_the_out_of_scope_ones_refused():
    assert AUTHZ_VALID.is_file(), f"{AUTHZ_VALID} is missing: the corpus lives in ../shared"
    errors = [f for f in validate_paths([AUTHZ_VALID]).findings if f.severity is Severity.ERROR]
    fields = {f.field.rsplit(".", 1)[-1] if "when" not in f.field else f.field for f in errors}
    # ipBlocks, remoteIpBlocks, trustDomains, serviceAccounts (and their negations), every when key but JWT's
    # and Envoy metadata's: read. What is left is end-user JWT (a later issue), Envoy's
    # metadata, each named.
    assert all("not supported" in f.message and "did you mean" not in f.message for f in errors), [
        f.format() for f in errors
    ]
    assert fields == {
        "requestPrincipals", "notRequestPrincipals",
        "spec.rules[0].when[5].key", "spec.rules[0].when[6].key", "spec.rules[0].when[7].key",
        "spec.rules[0].when[8].key", "spec.rules[0].when[9].key", "spec.rules[0].when[14].key",
    }  # fmt: skip


POLICY = """\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p}}
spec:
  rules:
    - {rule}
"""


@pytest.mark.parametrize(
    ("rule", "field", "message"),
    [
        ("from: [{source: {remoteIpBlocks: [10.0.0.300]}}]",
         "spec.rules[0].from[0].source.remoteIpBlocks", "'10.0.0.300' is not an IP address"),
        ("when: [{key: remote.ip, values: [nowhere]}]", "spec.rules[0].when[0].values[0]",
         "'nowhere' is not an IP address or CIDR block"),
        ("when: [{key: destination.ip, notValues: [10.0.0.0/40]}]",
         "spec.rules[0].when[0].notValues[0]", "is not an IP address or CIDR block"),
        ("when: [{key: destination.port, values: ['80', '70000']}]",
         "spec.rules[0].when[0].values[1]", "'70000' is not a port number"),
        ("when: [{key: 'request.headers[x token]', values: [a]}]", "spec.rules[0].when[0].key",
         "'x token' is not a header name"),
        ("when: [{key: source.labels, values: [a]}]", "spec.rules[0].when[0].key",
         "unknown condition key 'source.labels'; use request.headers[NAME] or connection.sni"),
        ("when: [{key: 'experimental.envoy.filters.x[y]', values: [a]}]",
         "spec.rules[0].when[0].key", "reads Envoy filters' dynamic metadata"),
    ],
)  # fmt: skip
def test_bad_values_get_a_precise_finding(rule: str, field: str, message: str):
    findings = validate_text(POLICY.format(rule=rule)).findings
    assert [(f.severity, f.field) for f in findings] == [(Severity.ERROR, field)], findings
    assert message in findings[0].message


def test_every_key_with_good_values_validates():
    rule = """when:
        - {key: remote.ip, values: [10.0.0.1, 10.1.0.0/16], notValues: ['::1']}
        - {key: source.ip, notValues: [192.0.2.0/24]}
        - {key: destination.ip, values: [10.9.0.1]}
        - {key: destination.port, values: ['0', '65535']}
        - {key: connection.sni, values: ['*.example.com', 'api.*', '*']}
        - {key: source.trustDomain, values: [cluster.local]}
        - {key: source.namespace, values: [default]}
        - {key: source.principal, values: [cluster.local/ns/default/sa/a]}
        - {key: 'request.headers[User-Agent]', values: ['Mozilla/*']}"""
    result = validate_text(POLICY.format(rule=rule))
    assert result.model is not None, [f.format() for f in result.findings]
    (policy,) = result.model.authorization_policies
    keys = [key for key, _, _ in policy.rules[0].conditions]
    assert keys == ["remote.ip", "source.ip", "destination.ip", "destination.port", "connection.sni",
                    "source.trustDomain", "source.namespace", "source.principal",
                    "request.headers[User-Agent]"]  # fmt: skip
