"""SPIFFE IDs: the one shape the mesh issues, and precise refusals of every other."""

from __future__ import annotations

import pytest

from tulle.security import SpiffeId, check_trust_domain, control_plane_identity


def test_an_identity_has_its_uri_and_istio_principal():
    identity = SpiffeId("cluster.local", "default", "frontend")
    assert identity.uri == "spiffe://cluster.local/ns/default/sa/frontend"
    assert identity.principal == "cluster.local/ns/default/sa/frontend"
    assert str(identity) == identity.uri


def test_parse_reads_back_what_uri_writes():
    identity = SpiffeId("td-1.example_x", "shop", "cart.v2")
    assert SpiffeId.parse(identity.uri) == identity


def test_the_control_plane_identity():
    assert control_plane_identity("cluster.local").uri == (
        "spiffe://cluster.local/ns/tulle-system/sa/tulle-controlplane"
    )


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        ("https://cluster.local/ns/a/sa/b", "does not start with 'spiffe://'"),
        ("SPIFFE://cluster.local/ns/a/sa/b", "does not start with 'spiffe://'"),
        ("spiffe://Cluster.local/ns/a/sa/b", "characters other than lowercase"),
        ("spiffe://cluster.local:443/ns/a/sa/b", "has a port"),
        ("spiffe://user@cluster.local/ns/a/sa/b", "has user info"),
        ("spiffe://cluster.local/ns/a/sa/b?x=1", "has a query"),
        ("spiffe://cluster.local/ns/a/sa/b#top", "has a fragment"),
        ("spiffe://cluster.local", "has no path"),
        ("spiffe:///ns/a/sa/b", "trust domain is empty"),
        ("spiffe://cluster.local/ns//sa/b", "empty path segment"),
        ("spiffe://cluster.local/ns/a/sa/b/", "empty path segment"),
        ("spiffe://cluster.local/ns/./sa/b", "'.' path segment"),
        ("spiffe://cluster.local/ns/a/sa/..", "'..' path segment"),
        ("spiffe://cluster.local/ns/a/sa/b%20c", "characters other than letters"),
        ("spiffe://cluster.local/ns/a/sa", "is not of the form"),
        ("spiffe://cluster.local/ns/a/sa/b/c", "is not of the form"),
        ("spiffe://cluster.local/namespace/a/sa/b", "is not of the form"),
        ("spiffe://cluster.local/ns/a/serviceaccount/b", "is not of the form"),
        ("spiffe://cluster.local/" + "a" * 2100, "longer than 2048"),
    ],
)
def test_parse_refuses_every_other_shape_saying_why(uri, reason):
    with pytest.raises(ValueError, match=r"SPIFFE|trust domain") as caught:
        SpiffeId.parse(uri)
    assert reason in str(caught.value)


@pytest.mark.parametrize(
    ("namespace", "service_account", "reason"),
    [
        ("", "b", "namespace is empty"),
        ("a", "..", "service account is '..'"),
        ("a/b", "c", "characters other than letters"),
    ],
)
def test_constructing_an_invalid_identity_is_refused(namespace, service_account, reason):
    with pytest.raises(ValueError, match=reason):
        SpiffeId("cluster.local", namespace, service_account)


def test_check_trust_domain():
    assert check_trust_domain("example.org") == "example.org"
    with pytest.raises(ValueError, match="'A'"):
        check_trust_domain("A.example")
    with pytest.raises(ValueError, match="longer than 255"):
        check_trust_domain("a" * 256)
