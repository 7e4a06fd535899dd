"""Certificates for TLS tests, made with ``cryptography``: an EC P-256 root for the trust domain
``cluster.local``, leaves with SPIFFE URI SANs, and the ones a mesh must refuse (an expired leaf,
a leaf from another CA, a leaf of another trust domain). Each credential is written as PEM files
(``openssl``, ``curl`` and ``ssl.SSLContext.load_cert_chain`` read files) and the helpers build
the ``ssl`` contexts the tests use."""

from __future__ import annotations

import datetime
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "cluster.local"
SERVER_DNS = "backend.default.svc"
"""The DNS name in the server leaf's SANs, for clients that check host names (curl)."""


def spiffe(service_account: str, trust_domain: str = TRUST_DOMAIN, namespace: str = "default"):
    """The SPIFFE id of ``service_account``."""
    return f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}"


@dataclass(frozen=True)
class Credential:
    """A leaf: its certificate, the chain to send (leaf then issuers below the root) and its key,
    as PEM files."""

    name: str
    uri: str | None
    cert: Path
    key: Path
    der: bytes


@dataclass(frozen=True)
class Authority:
    """A root certificate and its key, in memory and as a PEM file."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_authority(directory: Path, name: str) -> Authority:
    """A self-signed EC P-256 root, valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{name} root")])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Authority(name, cert, key, path)


def make_leaf(
    directory: Path,
    authority: Authority,
    name: str,
    uri: str | None,
    dns: tuple[str, ...] = (),
    expired: bool = False,
) -> Credential:
    """A leaf signed by ``authority`` with ``uri`` (a SPIFFE id) and ``dns`` as SANs, usable by
    a client and a server (as the mesh's workload certificates are); ``expired`` makes one whose
    validity ended an hour ago."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    if expired:
        not_before, not_after = now - datetime.timedelta(days=2), now - datetime.timedelta(hours=1)
    else:
        not_before, not_after = (
            now - datetime.timedelta(minutes=5),
            now + datetime.timedelta(days=1),
        )
    names: list[x509.GeneralName] = [x509.DNSName(host) for host in dns]
    if uri is not None:
        names.append(x509.UniformResourceIdentifier(uri))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))  # workload certificates carry their identity in the SAN
        .issuer_name(authority.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(authority.key.public_key()),
            critical=False,
        )
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=True)
    cert = builder.sign(authority.key, hashes.SHA256())
    cert_path = directory / f"{name}.pem"
    key_path = directory / f"{name}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Credential(name, uri, cert_path, key_path, cert.public_bytes(serialization.Encoding.DER))


@dataclass(frozen=True)
class Material:
    """Everything the TLS tests use, made once per test module."""

    directory: Path
    root: Authority
    other_root: Authority
    frontend: Credential
    """Client identity: spiffe://cluster.local/ns/default/sa/frontend."""
    backend: Credential
    """Server identity: spiffe://cluster.local/ns/default/sa/backend, with DNS SAN SERVER_DNS."""
    backend_rotated: Credential
    """The same identity, a newer certificate (rotation)."""
    expired: Credential
    """spiffe://cluster.local/ns/default/sa/frontend, expired an hour ago."""
    foreign_ca: Credential
    """spiffe://cluster.local/ns/default/sa/frontend, signed by another root."""
    foreign_domain: Credential
    """spiffe://other.example/ns/default/sa/frontend, signed by the mesh's root."""

    def server_context(
        self,
        credential: Credential | None = None,
        require_client_cert: bool = True,
        alpn: tuple[str, ...] = (),
    ) -> ssl.SSLContext:
        """A TLS 1.3 server context presenting ``credential`` (default: backend) that trusts the
        mesh's root and, by default, requires a client certificate (STRICT)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_3
        cred = credential or self.backend
        context.load_cert_chain(cred.cert, cred.key)
        context.load_verify_locations(cafile=self.root.path)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context

    def client_context(
        self, credential: Credential | None = None, trust: Authority | None = None
    ) -> ssl.SSLContext:
        """A client context presenting ``credential`` (default: frontend; none when the
        credential is ``NO_CERT``) that verifies the server's chain against ``trust`` (default:
        the mesh's root) but not its host name: mesh peers are checked by SPIFFE id."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=(trust or self.root).path)
        cred = credential or self.frontend
        if cred is not NO_CERT:
            context.load_cert_chain(cred.cert, cred.key)
        return context


NO_CERT = Credential("none", None, Path("/nonexistent"), Path("/nonexistent"), b"")
"""Pass as a client credential for a client without a certificate."""


def make_material(directory: Path) -> Material:
    """A root, another root, and the leaves of :class:`Material`, written under ``directory``."""
    root = make_authority(directory, "mesh")
    other = make_authority(directory, "other")
    return Material(
        directory=directory,
        root=root,
        other_root=other,
        frontend=make_leaf(directory, root, "frontend", spiffe("frontend")),
        backend=make_leaf(directory, root, "backend", spiffe("backend"), dns=(SERVER_DNS,)),
        backend_rotated=make_leaf(
            directory, root, "backend-rotated", spiffe("backend"), dns=(SERVER_DNS,)
        ),
        expired=make_leaf(directory, root, "expired", spiffe("frontend"), expired=True),
        foreign_ca=make_leaf(directory, other, "foreign-ca", spiffe("frontend")),
        foreign_domain=make_leaf(
            directory, root, "foreign-domain", spiffe("frontend", trust_domain="other.example")
        ),
    )


def uri_sans(peercert: dict[str, object] | None) -> list[str]:
    """The URI SANs of a ``getpeercert()`` dict."""
    if not peercert:
        return []
    names = peercert.get("subjectAltName", ())
    assert isinstance(names, tuple)
    return [value for kind, value in names if kind == "URI"]
