"""Peer verification: the SPIFFE ID in a peer's certificate, and whether the mesh accepts it.

The TLS handshake (Python's ``ssl``, against the trust bundle) proves that the peer holds a key
the CA certified; these functions then read its identity from the certificate (exactly one URI
SAN, a valid SPIFFE ID, as the X.509-SVID spec requires) and check it against the trust domain and,
on a client, the identities the registry knows for the destination. Workload side: no
``cryptography`` here (:mod:`tulle.security.workload_pki` reads DER); ``verify_chain``, which checks
a chain outside a handshake, is in :mod:`tulle.security.chain`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from tulle.security.spiffe import SpiffeId
from tulle.security.workload_pki import read_der_certificate

# The shape of ssl.SSLSocket.getpeercert()'s dict (typeshed's _PeerCertRetDictType).
PeerCertDict = Mapping[str, object]


class PeerRefused(Exception):  # noqa: N818 (named for the outcome, as the API promises)
    """A peer whose certificate or identity the mesh does not accept; the message says why."""


def identity_from_uris(uris: Sequence[str] | None) -> SpiffeId:
    """The one SPIFFE ID among a certificate's URI SANs ``uris`` (None: the certificate has no
    SAN extension); ``PeerRefused`` if there is none, several, or it is malformed."""
    if uris is None:
        raise PeerRefused("peer certificate has no SPIFFE ID (no SAN extension)")
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


def peer_identity_from_der(der: bytes | None) -> SpiffeId:
    """The SPIFFE ID of the DER certificate ``der`` (``getpeercert(binary_form=True)``, which is
    None when the peer presented no certificate)."""
    if der is None:
        raise PeerRefused("peer presented no certificate")
    try:
        facts = read_der_certificate(der)
    except ValueError as error:
        raise PeerRefused(f"peer certificate is not readable DER: {error}") from None
    return identity_from_uris(facts.uris)


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
    return identity_from_uris(uris)


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
