"""The control plane's own TLS identity: the mesh CA, chosen at start (the user's plug-in CA, or
the self-managed one kept in the state directory), the trust bundle published for workloads to
verify the control plane with (``root-cert.pem`` in the state directory, and the ``ROOTCA``
secret over ADS, both rewritten at each step of a root rotation), and the serving
certificate of the secure xDS port, renewed at half its lifetime without a restart (grpcio asks
for the current one at each handshake)."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2

from tulle.security.ca import CertificateAuthority
from tulle.security.files import PUBLIC_FILE_MODE, write_atomically
from tulle.security.keys import new_private_key, private_key_pem
from tulle.security.material import BUNDLE_FILE
from tulle.xds.types import TRUST_BUNDLE_SECRET

log = logging.getLogger(__name__)

ROOT_CERT_FILE = BUNDLE_FILE  # root-cert.pem, as workloads' file_watcher reads it too
CA_DIRECTORY = "ca"
SERVING_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class PluginCa:
    """The user's own CA (``tulle controlplane --ca-cert --ca-key [--ca-chain]``)."""

    cert: Path
    key: Path
    chain: Path | None = None


def open_ca(state_dir: Path, trust_domain: str, plugin: PluginCa | None) -> CertificateAuthority:
    """The mesh's CA, and ``state_dir/root-cert.pem`` written with its trust bundle."""
    if plugin is not None:
        ca = CertificateAuthority.from_files(
            plugin.cert, plugin.key, plugin.chain, trust_domain=trust_domain
        )
    else:
        ca = CertificateAuthority.load_or_create(state_dir / CA_DIRECTORY, trust_domain)
    publish_bundle(state_dir, ca)
    return ca


def publish_bundle(state_dir: Path, ca: CertificateAuthority) -> Path:
    """Write the trust bundle where workloads started from this state directory read it."""
    path = state_dir / ROOT_CERT_FILE
    write_atomically(path, ca.trust_bundle_pem(), PUBLIC_FILE_MODE)
    return path


def trust_bundle_secrets(ca: CertificateAuthority) -> dict[str, secret_pb2.Secret]:
    """The trust bundle as ADS serves it: Secret ``ROOTCA`` with the roots inline. Sidecars and
    library apps subscribe to it and renew their certificate when it changes, so a root rotation
    reaches every workload in seconds, not at its next renewal."""
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=ca.trust_bundle_pem())
    )
    return {
        TRUST_BUNDLE_SECRET: secret_pb2.Secret(name=TRUST_BUNDLE_SECRET, validation_context=context)
    }


class ServingCertificate:
    """The secure xDS port's certificate, re-issued by the CA when half its life is gone."""

    def __init__(self, ca: CertificateAuthority, hosts: list[str]) -> None:
        self.ca = ca
        self.hosts = hosts
        self._lock = threading.Lock()
        self._renew_after = datetime.min.replace(tzinfo=UTC)
        self._pair: tuple[bytes, bytes] = (b"", b"")
        self._bundle = b""
        self._refresh(datetime.now(UTC))

    def _refresh(self, now: datetime) -> bool:
        """Issue a new certificate (and key) if due; True when it changed."""
        with self._lock:
            bundle = self.ca.trust_bundle_pem()
            if now < self._renew_after and bundle == self._bundle:
                return False
            key = new_private_key()
            issued = self.ca.issue_server_certificate(
                key.public_key(), self.hosts, SERVING_LIFETIME
            )
            self._pair = (private_key_pem(key), issued.chain_pem)
            self._bundle = bundle
            self._renew_after = issued.not_before + (issued.not_after - issued.not_before) / 2
            log.info("control plane serving certificate issued until %s", issued.not_after)
            return True

    def refresh(self) -> bool:
        """Re-issue the certificate if half its life is gone or the trust bundle changed; True
        when it did (listeners that are not grpcio's then load :attr:`pair` again)."""
        return self._refresh(datetime.now(UTC))

    @property
    def pair(self) -> tuple[bytes, bytes]:
        """The current ``(key PEM, certificate chain PEM)``."""
        return self._pair

    def _configuration(self) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration([self._pair])

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """grpcio's per-handshake question: a new configuration, or None for the same."""
        if self._refresh(datetime.now(UTC)):
            return self._configuration()
        return None

    def credentials(self) -> grpc.ServerCredentials:
        """Server credentials (no client certificate asked: callers prove who they are with
        a credential in each call's metadata) that follow renewals."""
        return grpc.dynamic_ssl_server_credentials(self._configuration(), self._fetch)
