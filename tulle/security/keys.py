"""Workload keys and certificate signing requests (CSRs), and the checks a CA makes on a CSR.

A workload makes its own EC P-256 key, which never leaves its process, and asks for a certificate
with a CSR shaped as Istio's agent shapes it: an empty subject and the workload's SPIFFE ID as the
only (URI) subject alternative name. The CA reads a CSR with ``read_csr``, which refuses anything it
cannot trust (``CsrRefused``, with the reason).
"""

from __future__ import annotations

from typing import TypeAlias

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tulle.security.spiffe import SpiffeId

PrivateKey: TypeAlias = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey: TypeAlias = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

ACCEPTED_CURVES = ("secp256r1", "secp384r1")
MIN_RSA_BITS = 2048
MAX_CSR_BYTES = 64 * 1024  # a real CSR is under 1 KiB


class CsrRefused(ValueError):  # noqa: N818 (named for the outcome, as the API promises)
    """A CSR the CA will not sign; the message is the reason, fit to log and to return.
    ``wrong_identity``: the CSR asks for another identity than the caller proved (else the CSR
    itself is bad)."""

    def __init__(self, reason: str, *, wrong_identity: bool = False) -> None:
        super().__init__(reason)
        self.wrong_identity = wrong_identity


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A new EC P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS #8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key(pem: bytes, where: str = "private key") -> PrivateKey:
    """The key in unencrypted PEM ``pem``; ``ValueError`` naming ``where`` if it is not one the
    mesh uses (EC P-256/P-384, RSA of at least 2048 bits)."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where} is not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"{where} is a {type(key).__name__}; use EC P-256/P-384 or RSA >= 2048")
    problem = key_weakness(key.public_key())
    if problem:
        raise ValueError(f"{where}: {problem}")
    return key


def key_weakness(key: object) -> str | None:
    """Why public ``key`` is not accepted in the mesh, or None when it is."""
    if isinstance(key, ec.EllipticCurvePublicKey):
        if key.curve.name not in ACCEPTED_CURVES:
            return f"the key is on curve {key.curve.name}; only P-256 and P-384 are accepted"
        return None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            return f"the key is RSA of {key.key_size} bits; at least {MIN_RSA_BITS} are required"
        return None
    return f"the key is {type(key).__name__}; only EC P-256/P-384 and RSA >= 2048 are accepted"


def signature_hash(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384:
    """The digest to sign with ``key``: SHA-384 for P-384, else SHA-256."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp384r1":
        return hashes.SHA384()
    return hashes.SHA256()


def make_csr(key: PrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR for ``identity`` signed by ``key``: empty subject, one critical URI SAN."""
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,  # RFC 5280 4.2.1.6: critical when the subject is empty
        )
        .sign(key, signature_hash(key))
    )
    return request.public_bytes(serialization.Encoding.PEM)


def read_csr(pem: bytes) -> x509.CertificateSigningRequest:
    """The CSR in ``pem`` after checking its signature and key; ``CsrRefused`` otherwise."""
    if len(pem) > MAX_CSR_BYTES:
        raise CsrRefused(f"CSR is {len(pem)} bytes; at most {MAX_CSR_BYTES} are accepted")
    try:
        request = x509.load_pem_x509_csr(pem)
    except ValueError as error:
        raise CsrRefused(f"CSR is not a PEM certificate signing request: {error}") from None
    try:
        signature_ok = request.is_signature_valid
        public_key = request.public_key()
    except (ValueError, UnsupportedAlgorithm, x509.UnsupportedGeneralNameType) as error:
        raise CsrRefused(f"CSR cannot be checked: {error}") from None
    if not signature_ok:
        raise CsrRefused("CSR signature does not verify with its own public key")
    problem = key_weakness(public_key)
    if problem:
        raise CsrRefused(f"CSR refused: {problem}")
    return request


def _subject_alternative_names(request: x509.CertificateSigningRequest) -> list[x509.GeneralName]:
    """Every SAN ``request`` asks for (none if it has no SAN extension)."""
    try:
        extension = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except (ValueError, x509.DuplicateExtension, x509.UnsupportedGeneralNameType) as error:
        raise CsrRefused(f"CSR extensions cannot be read: {error}") from None
    return list(extension.value)


def requested_identities(request: x509.CertificateSigningRequest) -> list[str]:
    """The URI SANs ``request`` asks for, as written."""
    return [
        name.value
        for name in _subject_alternative_names(request)
        if isinstance(name, x509.UniformResourceIdentifier)
    ]


def requested_other_names(request: x509.CertificateSigningRequest) -> list[str]:
    """The SANs ``request`` asks for that are not URIs (DNS names, IPs, e-mail...), described."""
    described = []
    for name in _subject_alternative_names(request):
        if isinstance(name, x509.UniformResourceIdentifier):
            continue
        kind = {x509.DNSName: "DNS", x509.IPAddress: "IP", x509.RFC822Name: "email"}.get(
            type(name), type(name).__name__
        )
        described.append(f"{kind}:{name.value}")
    return described
