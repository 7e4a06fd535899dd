"""The CA's check of the replica a Sign request names (``tulle agent`` sends it): the token must
have been issued to that replica, else PERMISSION_DENIED with both names, labelled
``wrong_replica``; a request naming the token's own replica, or none (sidecar, library), is
signed."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from tulle.control.certificates import CertificateService, SignRefusedError
from tulle.security import (
    BootstrapTokens,
    CertificateAuthority,
    SpiffeId,
    make_csr,
    new_private_key,
)
from tulle.security.tokens import read_token_file


@pytest.fixture
def service(tmp_path: Path) -> tuple[CertificateService, str]:
    tokens = BootstrapTokens(tmp_path / "state")
    token = read_token_file(tokens.issue("default", "client", "client-0.default"))
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
    return CertificateService(ca, tokens, lambda: 60.0, CollectorRegistry()), token


def request(**fields: object) -> bytes:
    csr = make_csr(new_private_key(), SpiffeId("cluster.local", "default", "client"))
    return json.dumps({"csr": csr.decode(), **fields}).encode()


def test_the_tokens_own_replica_or_none_is_signed(service):
    ca, token = service
    for body in (request(replica="client-0.default"), request()):
        answer = json.loads(ca.sign(f"Bearer {token}", body))
        assert answer["identity"] == "spiffe://cluster.local/ns/default/sa/client"


def test_another_replica_is_refused(service):
    ca, token = service
    with pytest.raises(SignRefusedError) as refused:
        ca.sign(f"Bearer {token}", request(replica="payment-0.default"))
    assert refused.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.result == "wrong_replica"
    assert str(refused.value) == (
        "the token of replica client-0.default may not get a certificate for replica "
        "payment-0.default"
    )


def test_a_replica_that_is_not_a_string_is_a_bad_request(service):
    ca, token = service
    with pytest.raises(SignRefusedError, match='"replica" must be a string') as refused:
        ca.sign(f"Bearer {token}", request(replica=7))
    assert refused.value.code is grpc.StatusCode.INVALID_ARGUMENT
