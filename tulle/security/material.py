"""A workload's credentials (its key, its certificate chain, the trust bundle) and their uses:
TLS contexts for Python's ``ssl``, and files for stock grpcio's ``file_watcher`` (gRFC A29).

Python's ``ssl`` loads a certificate and key only from a path. ``load_into`` hands it an anonymous
in-memory file (Linux ``memfd_create``, opened through ``/proc/self/fd``), so the key never touches
a disk; where that is unavailable it writes a 0600 file in a fresh 0700 temporary directory and
removes both as soon as the context has read them.

Workload side: certificates and keys are read with :mod:`tulle.security.workload_pki`, never with
``cryptography``.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from tulle.security.files import PUBLIC_FILE_MODE, private_directory, write_atomically
from tulle.security.spiffe import SpiffeId
from tulle.security.verify import PeerRefused, identity_from_uris
from tulle.security.workload_pki import read_certificates, read_private_key


class Issued(Protocol):
    """What a CA's answer says (:class:`tulle.security.ca.IssuedCertificate`, which this module
    does not import: it is the CA side's, with ``cryptography``)."""

    @property
    def chain_pem(self) -> bytes: ...
    @property
    def identity(self) -> SpiffeId: ...
    @property
    def serial(self) -> int: ...
    @property
    def not_before(self) -> datetime: ...
    @property
    def not_after(self) -> datetime: ...


CHAIN_FILE = "cert-chain.pem"  # the names Istio's agent writes for proxyless gRPC
KEY_FILE = "key.pem"
BUNDLE_FILE = "root-cert.pem"


def _write_all(descriptor: int, data: bytes) -> None:
    """Write every byte of ``data`` to ``descriptor``."""
    view = memoryview(data)
    while view:
        view = view[os.write(descriptor, view) :]


def load_into(context: ssl.SSLContext, chain_pem: bytes, key_pem: bytes) -> None:
    """Load the certificate chain and key into ``context`` without writing the key to disk."""
    material = chain_pem + b"\n" + key_pem
    try:
        descriptor = os.memfd_create("tulle-credentials", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        descriptor = -1
    if descriptor >= 0:
        try:
            _write_all(descriptor, material)
            path = f"/proc/self/fd/{descriptor}"
            if os.path.exists(path):
                context.load_cert_chain(path)
                return
        finally:
            os.close(descriptor)
    with tempfile.TemporaryDirectory(prefix="tulle-tls-") as directory:  # made 0700
        path = os.path.join(directory, "credentials.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            _write_all(descriptor, material)
        finally:
            os.close(descriptor)
        context.load_cert_chain(path)


@dataclass(frozen=True)
class WorkloadCredentials:
    """A workload's key, its chain (leaf first), the trust bundle, and what the leaf says."""

    key_pem: bytes = field(repr=False)  # never in a log line
    chain_pem: bytes
    bundle_pem: bytes
    identity: SpiffeId
    not_before: datetime
    not_after: datetime
    serial: int  # the leaf's serial number

    @classmethod
    def from_issued(cls, key_pem: bytes, issued: Issued, bundle_pem: bytes) -> WorkloadCredentials:
        """The credentials of a CA's answer ``issued`` to a CSR made with ``key_pem``."""
        return cls(
            key_pem,
            issued.chain_pem,
            bundle_pem,
            issued.identity,
            issued.not_before,
            issued.not_after,
            issued.serial,
        )

    @classmethod
    def from_pem(cls, key_pem: bytes, chain_pem: bytes, bundle_pem: bytes) -> WorkloadCredentials:
        """Credentials read from PEM; ``ValueError`` when the key is not the leaf's, the leaf has
        no SPIFFE ID, or the bundle holds no certificate."""
        leaf = read_certificates(chain_pem, "certificate chain")[0]
        read_certificates(bundle_pem, "trust bundle")
        if leaf.public_key != read_private_key(key_pem).public_key:
            raise ValueError("the private key is not the key of the chain's first certificate")
        try:
            identity = identity_from_uris(leaf.uris)
        except PeerRefused as error:
            raise ValueError(f"workload certificate: {error}") from None
        return cls(
            key_pem,
            chain_pem,
            bundle_pem,
            identity,
            leaf.not_before,
            leaf.not_after,
            leaf.serial,
        )

    def expired(self, now: datetime) -> bool:
        """True when the leaf is no longer valid at ``now``."""
        return now >= self.not_after

    def remaining(self, now: datetime) -> timedelta:
        """How long the leaf stays valid after ``now`` (zero once expired)."""
        return max(self.not_after - now, timedelta(0))

    def _context(self, protocol: int) -> ssl.SSLContext:
        """A TLS 1.2+ context holding these credentials and trusting only the bundle."""
        context = ssl.SSLContext(protocol)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        load_into(context, self.chain_pem, self.key_pem)
        context.load_verify_locations(cadata=self.bundle_pem.decode("ascii"))
        return context

    def server_context(self, require_client_cert: bool) -> ssl.SSLContext:
        """A server context: client certificates required (STRICT) or optional (PERMISSIVE);
        either way one that is presented must verify against the bundle. ALPN is the caller's
        to set; the peer's SPIFFE ID is checked after the handshake (``verify.check_peer``)."""
        context = self._context(ssl.PROTOCOL_TLS_SERVER)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context presenting these credentials and requiring a server certificate
        that verifies against the bundle. No host name check: mesh servers are identified by
        SPIFFE ID, which the caller checks after the handshake (``verify.check_peer``)."""
        context = self._context(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def write_files(self, directory: Path) -> None:
        """Write ``cert-chain.pem``, ``key.pem`` (0600) and ``root-cert.pem`` in ``directory``
        (made 0700), each atomically, for grpcio's ``file_watcher`` certificate provider.

        The bundle goes first (a new root is trusted before anything it signed arrives), then
        the key, then the chain; grpcio re-reads when a file changed while it was reading.
        """
        private_directory(directory)
        write_atomically(directory / BUNDLE_FILE, self.bundle_pem, PUBLIC_FILE_MODE)
        write_atomically(directory / KEY_FILE, self.key_pem)
        write_atomically(directory / CHAIN_FILE, self.chain_pem, PUBLIC_FILE_MODE)

    @classmethod
    def read_files(cls, directory: Path) -> WorkloadCredentials:
        """The credentials ``write_files`` left in ``directory``."""
        return cls.from_pem(
            (directory / KEY_FILE).read_bytes(),
            (directory / CHAIN_FILE).read_bytes(),
            (directory / BUNDLE_FILE).read_bytes(),
        )
