"""X.509 building blocks of the CA: self-signed roots, workload leaves, PEM bundles, CA checks.

Pure functions over ``cryptography`` objects; the clock is always an argument. Leaves follow the
SPIFFE X.509-SVID profile as Istio issues it: empty subject, the SPIFFE ID as the only URI SAN
(critical, since the subject is empty), ``CA:FALSE``, digitalSignature + keyEncipherment,
serverAuth + clientAuth, authority and subject key identifiers, a random serial.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tulle.security.keys import PrivateKey, PublicKey, signature_hash

ROOT_LIFETIME = timedelta(days=3650)
ROOT_BACKDATE = timedelta(hours=1)  # a root made now is valid on hosts whose clocks lag
LEAF_BACKDATE = timedelta(minutes=1)  # clock skew between the CA and the workloads


def _key_usage(*, leaf: bool) -> x509.KeyUsage:
    """keyCertSign + cRLSign for a CA, digitalSignature + keyEncipherment for a leaf."""
    return x509.KeyUsage(
        digital_signature=leaf,
        content_commitment=False,
        key_encipherment=leaf,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=not leaf,
        crl_sign=not leaf,
        encipher_only=False,
        decipher_only=False,
    )


def fingerprint(certificate: x509.Certificate) -> str:
    """The SHA-256 of ``certificate``'s DER, in hex: a stable name for it."""
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def build_root(
    key: PrivateKey, trust_domain: str, now: datetime, lifetime: timedelta = ROOT_LIFETIME
) -> x509.Certificate:
    """A self-signed root CA certificate for ``key``, named after ``trust_domain``.

    Each root's common name ends with part of its key identifier, so the old and the new root of
    a rotation have different names.
    """
    key_id = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Tulle"),
            x509.NameAttribute(
                NameOID.COMMON_NAME, f"Tulle root CA {trust_domain} {key_id.digest.hex()[:8]}"
            ),
        ]
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - ROOT_BACKDATE)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(leaf=False), critical=True)
        .add_extension(key_id, critical=False)
        .sign(key, signature_hash(key))
    )


def _authority_key_identifier(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AKI naming ``issuer``: its own SKI if it has one, else one computed from its key."""
    try:
        ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        public_key = issuer.public_key()
        assert isinstance(public_key, PublicKey)  # checked when the CA was loaded
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key)
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def split_hosts(hosts: Iterable[str]) -> list[x509.GeneralName]:
    """``hosts`` as SANs: an IP address where one parses, else a DNS name."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def build_leaf(
    signer: x509.Certificate,
    signer_key: PrivateKey,
    public_key: PublicKey,
    names: Sequence[x509.GeneralName],
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    """A leaf for ``public_key`` with SANs ``names``, signed by ``signer``."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(leaf=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectAlternativeName(names), critical=True)
        .add_extension(_authority_key_identifier(signer), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .sign(signer_key, signature_hash(signer_key))
    )


def certificates_pem(certificates: Iterable[x509.Certificate]) -> bytes:
    """``certificates`` as concatenated PEM blocks, in order."""
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates)


def load_certificates(pem: bytes, where: str) -> list[x509.Certificate]:
    """Every certificate in ``pem``, in order; ``ValueError`` naming ``where`` if there is none."""
    try:
        certificates = x509.load_pem_x509_certificates(pem)
    except ValueError as error:
        raise ValueError(f"{where} holds no readable PEM certificate: {error}") from None
    return certificates


def is_ca(certificate: x509.Certificate) -> bool:
    """True when ``certificate`` has basicConstraints ``CA:TRUE``."""
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca


def may_sign_certificates(certificate: x509.Certificate) -> bool:
    """False when ``certificate`` has a keyUsage without keyCertSign, else True."""
    try:
        usage = certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return True
    return usage.key_cert_sign


def issued_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ``issuer``'s name and key signed ``certificate``."""
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def is_self_signed(certificate: x509.Certificate) -> bool:
    """True when ``certificate`` is its own issuer (a root)."""
    return issued_by(certificate, certificate)


def same_key(certificate: x509.Certificate, key: PrivateKey) -> bool:
    """True when ``key`` is the private half of ``certificate``'s public key."""
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return certificate.public_key().public_bytes(der, spki) == key.public_key().public_bytes(
        der, spki
    )
