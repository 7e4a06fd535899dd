"""Helpers for the security tests: credentials from a CA, a user's own CA hierarchy, and a TLS
handshake between two in-memory ``ssl.SSLObject``s (no sockets)."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tulle.security import (
    CertificateAuthority,
    SpiffeId,
    WorkloadCredentials,
    make_csr,
    new_private_key,
    private_key_pem,
)
from tulle.security.certificates import build_root

TRUST_DOMAIN = "cluster.local"
FRONTEND = SpiffeId(TRUST_DOMAIN, "default", "frontend")
PAYMENT = SpiffeId(TRUST_DOMAIN, "default", "payment")


def credentials(
    ca: CertificateAuthority,
    identity: SpiffeId,
    lifetime: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    bundle_pem: bytes | None = None,
) -> WorkloadCredentials:
    """A workload's credentials as it gets them: its own key, a CSR, the CA's answer."""
    key = new_private_key()
    issued = ca.issue(make_csr(key, identity), identity, lifetime, now=now)
    bundle = ca.trust_bundle_pem() if bundle_pem is None else bundle_pem
    return WorkloadCredentials.from_issued(private_key_pem(key), issued, bundle)


def der_chain(chain_pem: bytes) -> list[bytes]:
    """The certificates of ``chain_pem`` as DER, in order."""
    return [
        c.public_bytes(serialization.Encoding.DER)
        for c in x509.load_pem_x509_certificates(chain_pem)
    ]


def write_user_ca(directory: Path) -> tuple[Path, Path, Path, x509.Certificate]:
    """A user's own hierarchy, as ``openssl`` users make one: a root and an intermediate CA.

    Returns the intermediate's cert and key files, the chain file (intermediate, then root, as
    Istio's cert-chain.pem) and the root.
    """
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP384R1())
    root = build_root(root_key, "users.example", now)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "Users' intermediate CA")])
    intermediate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
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
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()),
            critical=False,
        )
        .sign(root_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    cert_file, key_file, chain_file = (
        directory / "ca-cert.pem",
        directory / "ca-key.pem",
        directory / "cert-chain.pem",
    )
    cert_file.write_bytes(intermediate.public_bytes(pem))
    key_file.write_bytes(private_key_pem(key))
    chain_file.write_bytes(intermediate.public_bytes(pem) + root.public_bytes(pem))
    return cert_file, key_file, chain_file, root


def _pump(source: ssl.MemoryBIO, destination: ssl.MemoryBIO) -> bool:
    """Move what ``source`` holds into ``destination``; True if anything moved."""
    data = source.read()
    if data:
        destination.write(data)
    return bool(data)


def _step(side: ssl.SSLObject) -> bool:
    """One handshake step of ``side``: True once its handshake is complete."""
    try:
        side.do_handshake()
    except ssl.SSLWantReadError:
        return False
    return True


def handshake(
    server_context: ssl.SSLContext, client_context: ssl.SSLContext
) -> tuple[ssl.SSLObject, ssl.SSLObject]:
    """A TLS handshake between two in-memory ``SSLObject``s, then one exchange of application
    data each way (under TLS 1.3 a client learns that its certificate was refused only when it
    reads). Returns (server, client); a refusal raises ``ssl.SSLError`` from the side that
    refused (or from the client, reading the server's alert)."""
    to_server, from_server = ssl.MemoryBIO(), ssl.MemoryBIO()
    to_client, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context.wrap_bio(to_server, from_server, server_side=True)
    client = client_context.wrap_bio(to_client, from_client, server_side=False)
    client_done = server_done = False
    while not (client_done and server_done):
        client_done = client_done or _step(client)
        moved = _pump(from_client, to_server)
        server_done = server_done or _step(server)
        moved = _pump(from_server, to_client) or moved
        assert moved or (client_done and server_done), "handshake stalled"
    client.write(b"ping")
    _pump(from_client, to_server)
    assert server.read(4) == b"ping"
    server.write(b"pong")
    _pump(from_server, to_client)
    assert client.read(4) == b"pong"
    return server, client
