"""Workload keys and CSRs: shaped as Istio's agent makes them; unusable CSRs refused with a reason."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.security.helpers import FRONTEND
from tulle.security import (
    CsrRefused,
    make_csr,
    new_private_key,
    private_key_pem,
    read_csr,
    requested_identities,
)
from tulle.security.keys import load_private_key, requested_other_names


def csr_with(key, names, subject=()) -> bytes:
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(list(subject)))
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def test_a_new_key_is_p256_and_its_pem_is_unencrypted_pkcs8():
    key = new_private_key()
    assert key.curve.name == "secp256r1"
    pem = private_key_pem(key)
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert load_private_key(pem).public_key() == key.public_key()


def test_a_csr_has_an_empty_subject_and_the_identity_as_uri_san():
    key = new_private_key()
    request = read_csr(make_csr(key, FRONTEND))
    assert request.subject == x509.Name([])
    assert requested_identities(request) == [FRONTEND.uri]
    san = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert request.public_key() == key.public_key()


def test_other_names_are_described():
    request = read_csr(
        csr_with(
            new_private_key(),
            [
                x509.DNSName("evil.example"),
                x509.UniformResourceIdentifier(FRONTEND.uri),
                x509.RFC822Name("a@b.example"),
            ],
        )
    )
    assert requested_other_names(request) == ["DNS:evil.example", "email:a@b.example"]
    assert requested_identities(request) == [FRONTEND.uri]


def test_a_csr_without_san_asks_for_nothing():
    request = read_csr(csr_with(new_private_key(), []))
    assert requested_identities(request) == []
    assert requested_other_names(request) == []


def test_unparsable_input_is_refused():
    with pytest.raises(CsrRefused, match="not a PEM certificate signing request"):
        read_csr(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(CsrRefused, match="not a PEM"):
        read_csr(b"hello")
    with pytest.raises(CsrRefused, match="at most 65536"):
        read_csr(b"x" * 70000)


def test_a_bad_signature_is_refused():
    pem = make_csr(new_private_key(), FRONTEND)
    request = x509.load_pem_x509_csr(pem)
    der = bytearray(request.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0x01  # inside the signature
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM)
    with pytest.raises(CsrRefused, match="signature does not verify"):
        read_csr(tampered)


@pytest.mark.parametrize(
    ("make_key", "reason"),
    [
        (lambda: rsa.generate_private_key(65537, 1024), "RSA of 1024 bits"),
        (lambda: ec.generate_private_key(ec.SECP256K1()), "curve secp256k1"),
        (ed25519.Ed25519PrivateKey.generate, "Ed25519PublicKey"),
    ],
)
def test_weak_or_foreign_keys_are_refused(make_key, reason):
    with pytest.raises(CsrRefused, match=reason):
        read_csr(csr_with(make_key(), [x509.UniformResourceIdentifier(FRONTEND.uri)]))


@pytest.mark.parametrize(
    "make_key",
    [
        lambda: rsa.generate_private_key(65537, 2048),
        lambda: ec.generate_private_key(ec.SECP384R1()),
    ],
)
def test_rsa_2048_and_p384_are_accepted(make_key):
    request = read_csr(make_csr(make_key(), FRONTEND))
    assert requested_identities(request) == [FRONTEND.uri]
