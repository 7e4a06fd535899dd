"""Host names in short and fully qualified forms."""

from __future__ import annotations

import pytest

from tulle.api.hosts import fqdn, host_matches, is_valid_host, short_names


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("catalog", "catalog.shop.svc.cluster.local"),
        ("catalog.default", "catalog.default.svc.cluster.local"),
        ("catalog.default.svc", "catalog.default.svc.cluster.local"),
        ("catalog.default.svc.cluster.local", "catalog.default.svc.cluster.local"),
        ("Catalog", "catalog.shop.svc.cluster.local"),
        ("example.com", "example.com"),
        ("api.example.com", "api.example.com"),
        ("*.example.com", "*.example.com"),
        ("*", "*"),
    ],
)
def test_fqdn(host, expected):
    assert fqdn(host, "shop", namespaces={"shop", "default"}) == expected


def test_short_names_are_every_name_a_client_may_use():
    assert short_names("catalog.shop.svc.cluster.local") == (
        "catalog.shop.svc.cluster.local",
        "catalog.shop.svc",
        "catalog.shop",
        "catalog",
    )
    assert short_names("api.example.com") == ("api.example.com",)


def test_wildcards():
    assert host_matches("*.example.com", "api.example.com")
    assert not host_matches("*.example.com", "example.com")
    assert host_matches("*", "anything")
    assert host_matches("a.b", "a.b")
    assert not host_matches("a.b", "a.c")


@pytest.mark.parametrize("host", ["a", "a-b.c", "*.a.b", "*", "x1.y2"])
def test_valid_hosts(host):
    assert is_valid_host(host)


@pytest.mark.parametrize("host", ["", "-a", "a-", "a..b", "a_b", "a.*", "**", "A"])
def test_invalid_hosts(host):
    assert not is_valid_host(host)
