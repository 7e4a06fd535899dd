"""What a workload reads from certificates and keys, as plain values: validity, serial, URI SANs,
CA flag, fingerprint, public key. Filled by :mod:`tulle.security.libcrypto` (or, where that cannot
load, by :mod:`tulle.security.pki_fallback`); this module also splits PEM text into DER blocks, so
neither backend parses PEM."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime

ACCEPTED_GROUPS = {"prime256v1": "P-256", "secp384r1": "P-384"}  # OpenSSL's names
MIN_RSA_BITS = 2048

_CERTIFICATE_PEM = re.compile(
    rb"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", re.DOTALL
)


@dataclass(frozen=True)
class CertificateFacts:
    """What a workload needs of one certificate."""

    der: bytes
    not_before: datetime  # aware, UTC
    not_after: datetime
    serial: int
    uris: tuple[str, ...] | None  # the URI SANs in order; None: no SAN extension at all
    is_ca: bool  # basicConstraints CA:TRUE
    public_key: bytes  # the SubjectPublicKeyInfo, DER

    @property
    def fingerprint(self) -> str:
        """The SHA-256 of the certificate's DER, in hex."""
        return hashlib.sha256(self.der).hexdigest()


@dataclass(frozen=True)
class KeyFacts:
    """What a workload needs of a private key: its public half and what kind of key it is."""

    public_key: bytes  # the SubjectPublicKeyInfo, DER
    algorithm: str  # "EC", "RSA", or what else OpenSSL calls it
    bits: int
    group: str | None  # an EC key's curve, OpenSSL's name (prime256v1, secp384r1)

    def weakness(self) -> str | None:
        """Why the key is not accepted in the mesh, or None when it is (EC P-256/P-384, RSA of
        at least 2048 bits: what the CA accepts in a CSR)."""
        if self.algorithm == "EC":
            if self.group not in ACCEPTED_GROUPS:
                return f"the key is on curve {self.group}; only P-256 and P-384 are accepted"
            return None
        if self.algorithm == "RSA":
            if self.bits < MIN_RSA_BITS:
                return f"the key is RSA of {self.bits} bits; at least {MIN_RSA_BITS} are required"
            return None
        return f"the key is {self.algorithm}; only EC P-256/P-384 and RSA >= 2048 are accepted"


def certificate_ders(pem: bytes, where: str) -> list[bytes]:
    """The DER of every ``CERTIFICATE`` block in ``pem``, in order; ``ValueError`` naming
    ``where`` when there is none or one's base64 is broken."""
    blocks = []
    for number, match in enumerate(_CERTIFICATE_PEM.finditer(pem), 1):
        try:
            blocks.append(base64.b64decode(b"".join(match.group(1).split()), validate=True))
        except binascii.Error as error:
            raise ValueError(
                f"{where} holds no readable PEM certificate: block {number}'s base64 is "
                f"broken ({error})"
            ) from None
    if not blocks:
        raise ValueError(f"{where} holds no readable PEM certificate (no BEGIN CERTIFICATE)")
    return blocks


def der_integer(encoded: bytes) -> int:
    """The value of a DER INTEGER (tag, length, two's complement content)."""
    length, offset = encoded[1], 2
    if length & 0x80:
        size = length & 0x7F
        length, offset = int.from_bytes(encoded[2 : 2 + size], "big"), 2 + size
    return int.from_bytes(encoded[offset : offset + length], "big", signed=True)
