"""Checking a peer's certificate chain outside a TLS handshake (a chain received as bytes), and
reading the SPIFFE ID of a ``cryptography`` certificate: the CA side's part of peer verification,
with ``cryptography``'s RFC 5280 path validation. The workload side's part (no ``cryptography``)
is :mod:`tulle.security.verify`.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.x509 import verification

from tulle.security.spiffe import SpiffeId
from tulle.security.verify import PeerRefused, identity_from_uris


def identity_of(certificate: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in ``certificate``'s SAN; ``PeerRefused`` if missing, several or malformed."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return identity_from_uris(None)
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        raise PeerRefused(f"peer certificate's extensions cannot be read: {error}") from None
    return identity_from_uris(names.get_values_for_type(x509.UniformResourceIdentifier))


def _ca_key_usage(policy: verification.Policy, ca: x509.Certificate, usage: object) -> None:
    """A CA's keyUsage, when it has one, must allow signing certificates."""
    if isinstance(usage, x509.KeyUsage) and not usage.key_cert_sign:
        raise ValueError("a CA's keyUsage does not allow keyCertSign")


# Web PKI's CA profile, except that a CA may omit keyUsage: OpenSSL's `req -x509` makes such roots,
# users plug them in (--ca-cert), and OpenSSL's own TLS verification accepts them.
_CA_POLICY = verification.ExtensionPolicy.webpki_defaults_ca().may_be_present(
    x509.KeyUsage, verification.Criticality.AGNOSTIC, _ca_key_usage
)
_LEAF_POLICY = verification.ExtensionPolicy.webpki_defaults_ee()


def verify_chain(chain_der: list[bytes], bundle: list[x509.Certificate], now: datetime) -> SpiffeId:
    """The SPIFFE ID of a peer chain (leaf first, DER) that verifies against ``bundle`` at ``now``.

    Uses ``cryptography``'s RFC 5280 / Web PKI path validation with its client verifier, which
    accepts a leaf whose only SAN is a URI (no DNS name needed) and requires the clientAuth EKU:
    Tulle's leaves carry serverAuth and clientAuth, as the X.509-SVID spec recommends, so this
    checks servers' certificates as well as clients'. Signatures, validity periods, CA flags,
    key usages and path lengths are all checked there (a CA without keyUsage is accepted, as
    OpenSSL accepts it). ``PeerRefused`` with the reason otherwise.
    """
    if not chain_der:
        raise PeerRefused("peer presented no certificate")
    if not bundle:
        raise PeerRefused("the trust bundle is empty: no peer can be verified")
    try:
        chain = [x509.load_der_x509_certificate(der) for der in chain_der]
    except ValueError as error:
        raise PeerRefused(f"peer certificate chain is not readable DER: {error}") from None
    verifier = (
        verification.PolicyBuilder()
        .store(verification.Store(bundle))
        .time(now)
        .extension_policies(ca_policy=_CA_POLICY, ee_policy=_LEAF_POLICY)
        .build_client_verifier()
    )
    try:
        verifier.verify(chain[0], chain[1:])
    except verification.VerificationError as error:
        raise PeerRefused(
            f"peer certificate chain does not verify against the trust bundle: {error}"
        ) from None
    return identity_of(chain[0])
