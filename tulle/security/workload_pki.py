"""The X.509 a workload does (sidecar, library, ``tulle agent``): make its key and CSR, read the
certificates the CA sends and the trust bundle, check that a key is a certificate's. Done by the
libcrypto Python's ``ssl`` already loaded (:mod:`tulle.security.libcrypto`), so that a workload
never loads the ``cryptography`` package (about 12 MB of RSS); where that libcrypto cannot be used,
by ``cryptography`` (:mod:`tulle.security.pki_fallback`, imported only then), with the same
results. The CA side (:mod:`tulle.security.ca`, the control plane) uses ``cryptography``."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from tulle.security import libcrypto
from tulle.security.certfacts import CertificateFacts, KeyFacts, certificate_ders
from tulle.security.spiffe import SpiffeId

log = logging.getLogger(__name__)


class PkiBackend(Protocol):
    """What both backends do (``Libcrypto``, ``CryptographyPki``)."""

    path: str

    def new_ec_key_pem(self) -> bytes: ...
    def key_facts(self, pem: bytes) -> KeyFacts: ...
    def csr_pem(self, key_pem: bytes, uri: str | None) -> bytes: ...
    def certificate_facts(self, der: bytes) -> CertificateFacts: ...


_lock = threading.Lock()
_chosen: list[PkiBackend] = []


def backend() -> PkiBackend:
    """libcrypto when it can be used, else ``cryptography`` (said once in the log, at warning)."""
    with _lock:
        if not _chosen:
            loaded = libcrypto.load()
            if isinstance(loaded, str):
                log.warning("%s; using the cryptography package instead (more memory)", loaded)
                from tulle.security.pki_fallback import CryptographyPki  # noqa: PLC0415

                _chosen.append(CryptographyPki())
            else:
                _chosen.append(loaded)
        return _chosen[0]


def new_key_pem() -> bytes:
    """A new EC P-256 private key (unencrypted PKCS #8 PEM); it never leaves the process."""
    return backend().new_ec_key_pem()


def make_csr_pem(key_pem: bytes, identity: SpiffeId | None) -> bytes:
    """A PEM CSR signed by ``key_pem``'s key: empty subject and ``identity`` as the one
    (critical) URI SAN, as :func:`tulle.security.keys.make_csr` makes it; with no identity, no
    SAN at all (the CA names the identity the caller proved)."""
    return backend().csr_pem(key_pem, identity.uri if identity is not None else None)


def read_certificates(pem: bytes, where: str) -> list[CertificateFacts]:
    """The facts of every certificate in ``pem``, in order; ``ValueError`` naming ``where`` when
    there is none or one cannot be read."""
    facts = []
    for number, der in enumerate(certificate_ders(pem, where), 1):
        try:
            facts.append(backend().certificate_facts(der))
        except ValueError as error:
            raise ValueError(f"{where}: certificate {number} cannot be read: {error}") from None
    return facts


def read_der_certificate(der: bytes) -> CertificateFacts:
    """The facts of the DER certificate ``der``; ``ValueError`` saying why it cannot be read."""
    return backend().certificate_facts(der)


def read_private_key(pem: bytes, where: str = "private key") -> KeyFacts:
    """The facts of the private key in ``pem``; ``ValueError`` naming ``where`` if it is not an
    unencrypted PEM key the mesh uses (EC P-256/P-384, RSA of at least 2048 bits)."""
    try:
        facts = backend().key_facts(pem)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{where} is not an unencrypted PEM private key: {error}") from None
    problem = facts.weakness()
    if problem:
        raise ValueError(f"{where}: {problem}")
    return facts
