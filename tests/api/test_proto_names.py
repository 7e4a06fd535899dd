"""Istio fields written with their protobuf names (Istio's own VirtualService example 17
writes ``redirect.prefix_rewrite``): read as the camelCase field with a WARNING naming the
spelling Kubernetes' CRD schema knows; only for Istio's kinds, whose API is protobuf. And
``redirect.prefixRewrite`` replaces the matched prefix, as Envoy's RedirectAction does."""

from __future__ import annotations

from tulle.api import validate_text
from tulle.api.findings import Severity

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: foo-redirect}
spec:
  hosts: [example.com]
  http:
  - match: [{uri: {prefix: /foo/}}]
    redirect: {authority: foo.example.com, prefix_rewrite: /}
  - route: [{destination: {host: example.com}}]
    retries: {attempts: 2, per_try_timeout: 1s}
"""
ENTRY = """\
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: example}
spec:
  hosts: [example.com, foo.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
"""


def test_protobuf_names_are_read_as_their_fields_with_a_warning():
    result = validate_text(ROUTE + ENTRY, "vs.yaml")
    assert [(f.line, f.severity, f.field) for f in result.findings] == [
        (8, Severity.WARNING, "spec.http[0].redirect.prefixRewrite"),
        (10, Severity.WARNING, "spec.http[1].retries.perTryTimeout"),
    ]
    assert result.findings[0].message.startswith(
        "prefix_rewrite is the protobuf name of prefixRewrite: read as prefixRewrite"
    )
    assert result.model is not None
    redirect, forward = result.model.http_routes["example.com"]
    assert redirect.redirect is not None
    assert (redirect.redirect.prefix, redirect.redirect.path) == ("/", None)
    assert redirect.redirect.authority == "foo.example.com"
    assert forward.retries.per_try_timeout == 1.0


def test_a_protobuf_name_beside_its_camel_case_field_or_of_no_field_stays_an_error():
    both = ROUTE.replace("per_try_timeout: 1s", "per_try_timeout: 1s, perTryTimeout: 2s")
    unknown = ROUTE.replace("prefix_rewrite: /", "prefix_rewrites: /")
    for text, field in (
        (both, "spec.http[1].retries.per_try_timeout"),
        (unknown, "spec.http[0].redirect.prefix_rewrites"),
    ):
        errors = [
            f for f in validate_text(text, "vs.yaml").findings if f.severity is Severity.ERROR
        ]
        assert [f.field for f in errors] == [field]


def test_gateway_api_kinds_have_no_protobuf_names():
    text = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: r}
spec:
  parent_refs: [{group: "", kind: Service, name: example}]
"""
    errors = [f for f in validate_text(text, "r.yaml").findings if f.severity is Severity.ERROR]
    assert [f.field for f in errors] == ["spec.parent_refs"]


def test_uri_and_prefix_rewrite_exclude_each_other():
    text = ROUTE.replace("prefix_rewrite: /", "prefixRewrite: /, uri: /x")
    errors = [f for f in validate_text(text, "vs.yaml").findings if f.severity is Severity.ERROR]
    assert [(f.field, f.message) for f in errors] == [
        (
            "spec.http[0].redirect.prefixRewrite",
            "set only one of uri, prefixRewrite (got uri, prefixRewrite)",
        )
    ]
