"""Names as Kubernetes checks them and endpoint addresses that are one host, in config."""

from __future__ import annotations

import pytest

from tulle.api import validate_text
from tulle.api.names import check_dns_label, check_labels, endpoint_address


@pytest.mark.parametrize(
    ("text", "written"),
    [("127.0.0.1", "127.0.0.1"), ("10.1.2.3", "10.1.2.3"), ("::1", "::1"), ("0:0::1", "::1"),
     ("fe80::1", "fe80::1"), ("::ffff:10.0.0.1", "::ffff:10.0.0.1")],
)  # fmt: skip
def test_host_addresses_are_accepted_in_their_usual_form(text, written):
    assert endpoint_address(text) == written


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0.0.0.0", "the unspecified address"),
        ("::", "the unspecified address"),
        ("0.1.2.3", "0.0.0.0/8"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("240.0.0.1", "reserved"),
        ("fe80::1%eth0", "zone id"),
        ("::ffff:0.0.0.0", "maps an IPv4 address: '0.0.0.0' is the unspecified address"),
        ("localhost", "is not an IP address"),
        (" 127.0.0.1", "is not an IP address"),
    ],
)
def test_addresses_that_are_not_one_host_are_refused(text, reason):
    with pytest.raises(ValueError, match=reason):
        endpoint_address(text)


@pytest.mark.parametrize("name", ["../../x", "a.b", "a/b", "-a", "A", "", "x" * 64])
def test_a_namespace_is_a_dns_label(name):
    with pytest.raises(ValueError, match=r"DNS label|longer than 63"):
        check_dns_label(name)


@pytest.mark.parametrize(
    ("labels", "reason"),
    [
        ({"app": "../x"}, "label value '../x'"),
        ({"a/b/c": "x"}, "label key 'a/b/c'"),
        ({"/x": "y"}, "the prefix must be a DNS name"),
        ({"app": "x" * 64}, "label value"),
        ({f"k{i}": "v" for i in range(65)}, "at most 64 labels"),
    ],
)
def test_labels_follow_the_kubernetes_syntax(labels, reason):
    with pytest.raises(ValueError, match=reason):
        check_labels(labels)


def test_kubernetes_style_labels_pass():
    labels = {"app": "web", "tulle.dev/version": "v1.2_beta", "empty": ""}
    assert check_labels(labels) == labels


SERVICE_ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db, namespace: %s}
spec:
  hosts: [db.example.com]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  resolution: %s
  endpoints:
    - address: %s
      labels: {%s}
"""


@pytest.mark.parametrize(
    ("values", "field", "message"),
    [
        (("../../x", "STATIC", "10.0.0.1", ""), "metadata.namespace", "'../../x' is not a valid"),
        (("shop.eu", "STATIC", "10.0.0.1", ""), "metadata.namespace", "not a valid DNS label"),
        (("shop", "STATIC", "0.0.0.0", ""), "spec.endpoints[0].address", "unspecified address"),
        (("shop", "STATIC", "224.0.0.9", ""), "spec.endpoints[0].address", "multicast"),
        (("shop", "DNS", "db/../x", ""), "spec.endpoints[0].address", "nor a DNS name"),
        (("shop", "STATIC", "10.0.0.1", "app: ../x"), "spec.endpoints[0].labels", "label value"),
    ],
)
def test_config_names_and_endpoint_addresses_are_checked(values, field, message):
    result = validate_text(SERVICE_ENTRY % values, "se.yaml")
    errors = [f for f in result.findings if f.severity.value == "ERROR"]
    assert [f.field for f in errors] == [field]
    assert message in errors[0].message
