"""Mutual TLS with Python's ssl between two in-memory SSLObjects, using the workload contexts:
each side sees the other's SPIFFE ID; what the mesh must refuse is refused."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from tests.security.helpers import FRONTEND, PAYMENT, credentials, handshake
from tulle.security import (
    CertificateAuthority,
    PeerRefused,
    SpiffeId,
    check_peer,
    peer_identity_from_der,
    peer_identity_from_getpeercert,
)


@pytest.fixture(scope="module")
def payment(ca):
    return credentials(ca, PAYMENT)


@pytest.fixture(scope="module")
def frontend(ca):
    return credentials(ca, FRONTEND)


def test_mutual_tls_each_side_sees_the_others_identity(payment, frontend):
    server, client = handshake(payment.server_context(True), frontend.client_context())
    assert server.version() in ("TLSv1.3", "TLSv1.2")
    assert peer_identity_from_getpeercert(server.getpeercert()) == FRONTEND
    assert peer_identity_from_der(client.getpeercert(binary_form=True)) == PAYMENT
    check_peer(peer_identity_from_getpeercert(server.getpeercert()), "cluster.local", None)
    check_peer(
        peer_identity_from_der(client.getpeercert(binary_form=True)),
        "cluster.local",
        [PAYMENT.uri],
    )


def test_alpn_is_the_callers_to_set(payment, frontend):
    server_context, client_context = payment.server_context(True), frontend.client_context()
    server_context.set_alpn_protocols(["h2", "http/1.1"])
    client_context.set_alpn_protocols(["h2"])
    server, client = handshake(server_context, client_context)
    assert server.selected_alpn_protocol() == client.selected_alpn_protocol() == "h2"


def test_contexts_refuse_tls_below_1_2(payment, frontend):
    for context in (payment.server_context(True), frontend.client_context()):
        assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert frontend.client_context().check_hostname is False
    assert frontend.client_context().verify_mode == ssl.CERT_REQUIRED
    assert payment.server_context(True).verify_mode == ssl.CERT_REQUIRED
    assert payment.server_context(False).verify_mode == ssl.CERT_OPTIONAL


def test_strict_refuses_a_client_without_a_certificate(payment):
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=payment.bundle_pem.decode())
    with pytest.raises(
        ssl.SSLError, match=r"PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED"
    ):
        handshake(payment.server_context(True), bare)


def test_permissive_accepts_a_client_without_a_certificate_and_says_so(payment):
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.check_hostname = False
    bare.load_verify_locations(cadata=payment.bundle_pem.decode())
    server, _client = handshake(payment.server_context(False), bare)
    with pytest.raises(PeerRefused, match="peer presented no certificate"):
        peer_identity_from_getpeercert(server.getpeercert())


def test_a_client_certificate_from_another_ca_is_refused_by_the_handshake(payment, other_ca):
    impostor = credentials(other_ca, FRONTEND, bundle_pem=payment.bundle_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(payment.server_context(True), impostor.client_context())


def test_a_server_certificate_from_another_ca_is_refused_by_the_client(frontend, other_ca):
    impostor = credentials(other_ca, PAYMENT, bundle_pem=frontend.bundle_pem)
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        handshake(impostor.server_context(True), frontend.client_context())


def test_an_expired_client_certificate_is_refused_by_the_handshake(ca, payment):
    expired = credentials(
        ca, FRONTEND, lifetime=timedelta(minutes=5), now=datetime.now(UTC) - timedelta(hours=1)
    )
    assert expired.expired(datetime.now(UTC))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate has expired"):
        handshake(payment.server_context(True), expired.client_context())


def test_a_peer_of_another_trust_domain_is_refused_by_check_peer(tmp_path, ca, payment):
    foreign_ca = CertificateAuthority.load_or_create(tmp_path / "foreign", "other.example")
    stranger = SpiffeId("other.example", "default", "frontend")
    federated = payment.bundle_pem + foreign_ca.trust_bundle_pem()
    server_side = credentials(ca, PAYMENT, bundle_pem=federated)
    client_side = credentials(foreign_ca, stranger, bundle_pem=federated)
    server, _client = handshake(server_side.server_context(True), client_side.client_context())
    identity = peer_identity_from_getpeercert(server.getpeercert())
    with pytest.raises(PeerRefused) as refused:
        check_peer(identity, "cluster.local", None)
    assert str(refused.value) == (
        "peer identity spiffe://other.example/ns/default/sa/frontend is not in trust domain "
        "cluster.local"
    )


def test_a_server_presenting_another_workloads_certificate_is_refused(ca, frontend):
    cart = credentials(ca, SpiffeId("cluster.local", "default", "cart"))
    _server, client = handshake(cart.server_context(True), frontend.client_context())
    identity = peer_identity_from_der(client.getpeercert(binary_form=True))
    with pytest.raises(PeerRefused) as refused:
        check_peer(identity, "cluster.local", [PAYMENT.uri, "cluster.local/ns/shop/sa/payment"])
    assert str(refused.value) == (
        "upstream peer identity spiffe://cluster.local/ns/default/sa/cart is not one of "
        "[cluster.local/ns/shop/sa/payment, spiffe://cluster.local/ns/default/sa/payment]"
    )
