"""Peer verification: the SPIFFE ID in a peer's certificate, and whether the mesh accepts it.

The TLS handshake (Python's ``ssl``, against the trust bundle) proves that the peer holds a key
the CA certified; these functions then read its identity from the certificate (exactly one URI
SAN, a valid SPIFFE ID, as the X.509-SVID spec requires) and check it against the trust domain and,
on a client, the identities the registry knows for the destination. ``verify_chain`` checks a
chain outside a handshake (a certificate received as bytes).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from cryptography import x509
from cryptography.x509 import verification

from tulle.security.spiffe import SpiffeId

# The shape of ssl.SSLSocket.getpeercert()'s dict (typeshed's _PeerCertRetDictType).
PeerCertDict = Mapping[str, object]


class PeerRefused(Exception):  # noqa: N818 (named for the outcome, as the API promises)
    """A peer whose certificate or identity the mesh does not accept; the message says why."""


def _identity_from_uris(uris: list[str]) -> SpiffeId:
    """The one SPIFFE ID among a certificate's URI SANs ``uris``; ``PeerRefused`` otherwise."""
    if not uris:
        raise PeerRefused("peer certificate has no SPIFFE ID (no URI SAN)")
    if len(uris) > 1:
        raise PeerRefused(
            f"peer certificate has {len(uris)} URI SANs ({', '.join(uris)}); "
            "an X.509-SVID has exactly one"
        )
    try:
        return SpiffeId.parse(uris[0])
    except ValueError as error:
        raise PeerRefused(f"peer certificate's URI SAN is not a mesh identity: {error}") from None


def identity_of(certificate: x509.Certificate) -> SpiffeId:
    """The SPIFFE ID in ``certificate``'s SAN; ``PeerRefused`` if missing, several or malformed."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise PeerRefused("peer certificate has no SPIFFE ID (no SAN extension)") from None
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        raise PeerRefused(f"peer certificate's extensions cannot be read: {error}") from None
    return _identity_from_uris(names.get_values_for_type(x509.UniformResourceIdentifier))


def peer_identity_from_der(der: bytes | None) -> SpiffeId:
    """The SPIFFE ID of the DER certificate ``der`` (``getpeercert(binary_form=True)``, which is
    None when the peer presented no certificate)."""
    if der is None:
        raise PeerRefused("peer presented no certificate")
    try:
        certificate = x509.load_der_x509_certificate(der)
    except ValueError as error:
        raise PeerRefused(f"peer certificate is not readable DER: {error}") from None
    return identity_of(certificate)


def peer_identity_from_getpeercert(cert: PeerCertDict | None) -> SpiffeId:
    """The SPIFFE ID in Python's ``getpeercert()`` dict (``subjectAltName: (('URI', ...),)``)."""
    if cert is None:
        raise PeerRefused("peer presented no certificate")
    if not cert:
        raise PeerRefused("peer certificate was not verified (getpeercert() is empty)")
    names = cert.get("subjectAltName", ())
    if not isinstance(names, tuple | list):
        raise PeerRefused("peer certificate's subjectAltName is not a sequence")
    uris = [
        str(entry[1])
        for entry in names
        if isinstance(entry, tuple | list) and len(entry) == 2 and entry[0] == "URI"
    ]
    return _identity_from_uris(uris)


def check_peer(identity: SpiffeId, trust_domain: str, allowed: Collection[str] | None) -> None:
    """``PeerRefused`` unless ``identity`` is in ``trust_domain`` and, when ``allowed`` is given,
    one of it (``allowed`` holds SPIFFE URIs or Istio principals, ``td/ns/NS/sa/SA``).

    ``allowed`` is what a client knows of its destination (the registry's service accounts for
    it): an endpoint presenting another workload's certificate is refused.
    """
    if identity.trust_domain != trust_domain:
        raise PeerRefused(f"peer identity {identity} is not in trust domain {trust_domain}")
    if allowed is not None and identity.uri not in allowed and identity.principal not in allowed:
        raise PeerRefused(
            f"upstream peer identity {identity} is not one of [{', '.join(sorted(allowed))}]"
        )


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
