"""The bootstrap token in the JWT shape grpcio's ``jwt_token_file`` call credentials read: what
grpcio parses of it (three parts, the second base64url JSON with an integer ``exp``), and the
control plane taking the token back out, while any other credential passes unchanged."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from tulle.security.grpc_token import unwrap, wrap

TOKEN = "hSa0Zx_-9kQ"
EXPIRES = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _part(text: str) -> object:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def test_the_envelope_is_what_grpcio_parses():
    envelope = wrap(TOKEN, EXPIRES)
    header, claims, signature = envelope.split(".")
    assert _part(header) == {"alg": "none", "typ": "tulle-bootstrap"}
    assert _part(claims) == {"exp": int(EXPIRES.timestamp())}
    assert signature == TOKEN
    assert "=" not in envelope  # base64url without padding, as JWTs are
    assert "\n" not in envelope  # grpcio sends the file's bytes as they are


def test_the_token_comes_back_out():
    assert unwrap(wrap(TOKEN, EXPIRES)) == TOKEN


@pytest.mark.parametrize(
    "credential",
    [
        TOKEN,  # a bare bootstrap token (sidecar, library)
        "a.b.c",  # three parts that are not an envelope
        "eyJ0eXAiOiJKV1QifQ.e30.sig",  # a JWT ({"typ":"JWT"}) that is not one of ours
        "x.y.",  # an empty last part
    ],
)
def test_other_credentials_pass_unchanged(credential: str):
    assert unwrap(credential) == credential


@pytest.mark.parametrize("token", ["", "a.b", "has space", "line\n"])
def test_what_cannot_be_wrapped(token: str):
    with pytest.raises(ValueError, match="one word without"):
        wrap(token, EXPIRES)
