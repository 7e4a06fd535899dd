"""Peer identities from certificates, and chain checks outside a handshake."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.security.helpers import FRONTEND, der_chain, write_user_ca
from tulle.security import (
    CertificateAuthority,
    PeerRefused,
    check_peer,
    make_csr,
    new_private_key,
    peer_identity_from_der,
    peer_identity_from_getpeercert,
    verify_chain,
)
from tulle.security.certificates import build_leaf, build_root, split_hosts


def leaf_with(names) -> bytes:
    """A leaf with arbitrary SANs, as a broken or hostile CA might sign."""
    now = datetime.now(UTC)
    root_key = new_private_key()
    leaf = build_leaf(
        build_root(root_key, "cluster.local", now),
        root_key,
        new_private_key().public_key(),
        names,
        now - timedelta(minutes=1),
        now + timedelta(hours=1),
    )
    return leaf.public_bytes(serialization.Encoding.DER)


def test_identity_from_der(ca):
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1))
    assert peer_identity_from_der(issued.leaf.public_bytes(serialization.Encoding.DER)) == FRONTEND


@pytest.mark.parametrize(
    ("names", "reason"),
    [
        (split_hosts(["payment.default.svc"]), "no SPIFFE ID (no URI SAN)"),
        (
            [
                x509.UniformResourceIdentifier(FRONTEND.uri),
                x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/admin"),
            ],
            "has 2 URI SANs",
        ),
        (
            [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/a/b")],
            "is not a mesh identity",
        ),
        ([x509.UniformResourceIdentifier("https://example.org/")], "is not a mesh identity"),
    ],
)
def test_a_missing_multiple_or_malformed_spiffe_id_is_refused(names, reason):
    with pytest.raises(PeerRefused, match=re.escape(reason)):
        peer_identity_from_der(leaf_with(names))


def test_unreadable_der_is_refused():
    with pytest.raises(PeerRefused, match="not readable DER"):
        peer_identity_from_der(b"\x30\x03\x02\x01\x00")
    with pytest.raises(PeerRefused, match="peer presented no certificate"):
        peer_identity_from_der(None)


def test_identity_from_getpeercert_dict():
    cert = {
        "subject": (),
        "subjectAltName": (("DNS", "payment"), ("URI", FRONTEND.uri)),
        "notAfter": "Jan  1 00:00:00 2030 GMT",
    }
    assert peer_identity_from_getpeercert(cert) == FRONTEND


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        (None, "peer presented no certificate"),
        ({}, "was not verified"),
        ({"subject": ()}, "no SPIFFE ID"),
        ({"subjectAltName": (("URI", FRONTEND.uri), ("URI", FRONTEND.uri))}, "2 URI SANs"),
        ({"subjectAltName": (("URI", "spiffe://Cluster/ns/a/sa/b"),)}, "not a mesh identity"),
    ],
)
def test_getpeercert_refusals(cert, reason):
    with pytest.raises(PeerRefused, match=re.escape(reason)):
        peer_identity_from_getpeercert(cert)


def test_check_peer_accepts_uris_and_principals():
    check_peer(FRONTEND, "cluster.local", None)
    check_peer(FRONTEND, "cluster.local", [FRONTEND.uri])
    check_peer(FRONTEND, "cluster.local", {FRONTEND.principal})
    with pytest.raises(PeerRefused, match=r"is not one of \[\]"):
        check_peer(FRONTEND, "cluster.local", [])


def test_verify_chain_refusals(ca, other_ca):
    chain = der_chain(
        ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1)).chain_pem
    )
    now = datetime.now(UTC)
    assert verify_chain(chain, ca.roots, now) == FRONTEND
    with pytest.raises(PeerRefused, match="does not verify against the trust bundle"):
        verify_chain(chain, other_ca.roots, now)
    with pytest.raises(PeerRefused, match="not valid at validation time"):
        verify_chain(chain, ca.roots, now + timedelta(hours=2))
    with pytest.raises(PeerRefused, match="no certificate"):
        verify_chain([], ca.roots, now)
    with pytest.raises(PeerRefused, match="trust bundle is empty"):
        verify_chain(chain, [], now)


def test_verify_chain_through_an_intermediate(tmp_path):
    cert, key, chain_file, root = write_user_ca(tmp_path)
    plugin = CertificateAuthority.from_files(cert, key, chain_file, trust_domain="cluster.local")
    chain = der_chain(
        plugin.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1)).chain_pem
    )
    now = datetime.now(UTC)
    assert verify_chain(chain, [root], now) == FRONTEND
    with pytest.raises(PeerRefused, match="does not verify"):
        verify_chain(chain[:1], [root], now)  # the intermediate is needed


def test_a_leaf_signed_by_a_leaf_is_refused(ca):
    """A workload cannot act as a CA with its own certificate (CA:FALSE)."""
    workload_key = new_private_key()
    workload = ca.issue(make_csr(workload_key, FRONTEND), FRONTEND, timedelta(hours=1)).leaf
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(workload.subject)
        .public_key(new_private_key().public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/default/sa/admin")]
            ),
            critical=True,
        )
        .sign(workload_key, hashes.SHA256())
    )
    chain = [c.public_bytes(serialization.Encoding.DER) for c in (forged, workload)]
    with pytest.raises(PeerRefused, match="does not verify"):
        verify_chain(chain, ca.roots, now)


def openssl_style_root(key, key_usage: x509.KeyUsage | None) -> x509.Certificate:
    """A root as `openssl req -x509` makes one: no keyUsage unless asked for."""
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "openssl-style root")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if key_usage is not None:
        builder = builder.add_extension(key_usage, critical=True)
    return builder.sign(key, hashes.SHA256())


def test_a_root_without_key_usage_is_accepted_but_one_without_cert_signing_is_not():
    signing_only = x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    now = datetime.now(UTC)
    for key_usage, accepted in ((None, True), (signing_only, False)):
        key = new_private_key()
        root = openssl_style_root(key, key_usage)
        leaf = build_leaf(
            root,
            key,
            new_private_key().public_key(),
            [x509.UniformResourceIdentifier(FRONTEND.uri)],
            now - timedelta(minutes=1),
            now + timedelta(hours=1),
        )
        chain = [leaf.public_bytes(serialization.Encoding.DER)]
        if accepted:
            assert verify_chain(chain, [root], now) == FRONTEND
        else:
            with pytest.raises(PeerRefused, match="keyCertSign"):
                verify_chain(chain, [root], now)
