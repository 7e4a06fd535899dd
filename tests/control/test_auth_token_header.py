"""The admin token in ``X-Tulle-Token`` (what passes the Kubernetes API server's service proxy,
which removes ``Authorization``): accepted as the bearer token is, refused when wrong, and
``Authorization`` decides when both are sent."""

from __future__ import annotations

import pytest

from tulle.control.auth import AccessDenied, ApiAuth
from tulle.transport.http_server import Request

ADMIN = "admin-token-0123456789abcdef"


def test_the_token_header_proves_the_admin() -> None:
    assert (
        ApiAuth(ADMIN, None, "x")
        .caller(Request("GET", "/api/v1/proxy-status", {}, {"x-tulle-token": ADMIN}))
        .admin
    )


def test_a_wrong_token_header_is_refused_without_echoing_it() -> None:
    with pytest.raises(AccessDenied) as refused:
        ApiAuth(ADMIN, None, "x").caller(Request("GET", "/", {}, {"x-tulle-token": "guess"}))
    assert refused.value.status == 401
    assert "guess" not in str(refused.value)


def test_authorization_decides_when_both_are_sent() -> None:
    with pytest.raises(AccessDenied) as refused:
        ApiAuth(ADMIN, None, "x").caller(
            Request("GET", "/", {}, {"authorization": "Bearer wrong", "x-tulle-token": ADMIN})
        )
    assert refused.value.status == 401


def test_no_credential_names_both_ways_to_send_one() -> None:
    with pytest.raises(AccessDenied) as refused:
        ApiAuth(ADMIN, None, "in the Secret tulle-system/tulle-admin-token").caller(
            Request("GET", "/", {}, {})
        )
    assert "or x-tulle-token: <token>" in str(refused.value)
