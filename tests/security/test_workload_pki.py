"""The workload's X.509 without ``cryptography`` (issue 17's RSS regression): keys and CSRs made
through the libcrypto Python's ``ssl`` loaded are what the CA (``cryptography``) accepts and what
``ssl`` loads; the facts read from certificates equal what ``cryptography`` reads; bad input gets a
clear error; nothing leaks; and a process running the workload side never loads ``cryptography``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.security.helpers import FRONTEND, PAYMENT, handshake, write_user_ca
from tulle.security import (
    CertificateAuthority,
    WorkloadCredentials,
    check_peer,
    libcrypto,
    make_csr,
    peer_identity_from_getpeercert,
    private_key_pem,
    read_csr,
    requested_identities,
    workload_pki,
)
from tulle.security.certfacts import CertificateFacts
from tulle.security.certificates import build_leaf, build_root, fingerprint, split_hosts
from tulle.security.keys import load_private_key
from tulle.security.libcrypto import Libcrypto, LibcryptoError
from tulle.security.pki_fallback import CryptographyPki

DER = serialization.Encoding.DER
LIFETIME = timedelta(hours=1)


@pytest.fixture(scope="module")
def lib() -> Libcrypto:
    loaded = libcrypto.load()
    assert isinstance(loaded, Libcrypto), loaded  # this machine has OpenSSL 3 beside ssl
    return loaded


@pytest.fixture
def fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """The workload side as on a platform whose libcrypto cannot be used."""
    monkeypatch.setattr(libcrypto, "_loaded", ["libcrypto (none) cannot be used: test"])
    monkeypatch.setattr(workload_pki, "_chosen", [])


def test_the_library_is_the_one_ssl_loaded(lib: Libcrypto) -> None:
    maps = Path("/proc/self/maps").read_text()
    assert lib.path in maps
    assert workload_pki.backend() is lib


def test_the_csr_is_the_one_cryptography_makes_and_the_ca_accepts(lib: Libcrypto) -> None:
    key_pem = workload_pki.new_key_pem()
    assert key_pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS #8
    key = load_private_key(key_pem)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    csr = workload_pki.make_csr_pem(key_pem, FRONTEND)
    request = read_csr(csr)  # the CA's checks: signature, key
    assert requested_identities(request) == [FRONTEND.uri]
    assert request.signature_hash_algorithm is not None
    assert request.signature_hash_algorithm.name == "sha256"
    # Byte for byte what keys.make_csr signs (empty subject, one critical URI SAN), same key.
    expected = x509.load_pem_x509_csr(make_csr(key, FRONTEND))
    assert request.tbs_certrequest_bytes == expected.tbs_certrequest_bytes
    assert request.signature_algorithm_oid == expected.signature_algorithm_oid


def test_a_csr_without_identity_names_nothing(lib: Libcrypto) -> None:
    request = read_csr(workload_pki.make_csr_pem(workload_pki.new_key_pem(), None))
    assert request.subject == x509.Name([])
    assert list(request.extensions) == []


def test_the_key_serves_tls_with_the_certificate_the_ca_issued(
    lib: Libcrypto, ca: CertificateAuthority
) -> None:
    pems = {}
    for identity in (FRONTEND, PAYMENT):
        key_pem = workload_pki.new_key_pem()
        issued = ca.issue(workload_pki.make_csr_pem(key_pem, identity), identity, LIFETIME)
        pems[identity] = WorkloadCredentials.from_pem(
            key_pem, issued.chain_pem, ca.trust_bundle_pem()
        )
        assert pems[identity].identity == identity
        assert pems[identity].serial == issued.serial
        assert pems[identity].not_after == issued.not_after
    server, client = handshake(
        pems[PAYMENT].server_context(require_client_cert=True), pems[FRONTEND].client_context()
    )
    check_peer(peer_identity_from_getpeercert(client.getpeercert()), "cluster.local", None)
    assert peer_identity_from_getpeercert(server.getpeercert()) == FRONTEND


def _leaf(names: Sequence[x509.GeneralName]) -> x509.Certificate:
    now = datetime.now(UTC)
    root_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    root = build_root(root_key, "cluster.local", now)
    return build_leaf(root, root_key, key.public_key(), names, now, now + LIFETIME)


def _certificates(ca: CertificateAuthority, tmp: Path) -> dict[str, x509.Certificate]:
    issued = ca.issue(make_csr(ec.generate_private_key(ec.SECP256R1()), FRONTEND), FRONTEND)
    cert_file, _, _, user_root = write_user_ca(tmp)
    uris = [x509.UniformResourceIdentifier(FRONTEND.uri), x509.UniformResourceIdentifier("a:b")]
    return {
        "leaf": issued.leaf,
        "root": ca.roots[0],
        "user root (P-384)": user_root,
        "intermediate": x509.load_pem_x509_certificate(cert_file.read_bytes()),
        "two URI SANs": _leaf(uris),
        "no URI SAN": _leaf(split_hosts(["payment.default.svc", "10.0.0.1"])),
    }


def _expected(certificate: x509.Certificate) -> CertificateFacts:
    """What ``cryptography`` itself says of ``certificate`` (written out, not the fallback)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        uris: tuple[str, ...] | None = tuple(
            names.value.get_values_for_type(x509.UniformResourceIdentifier)
        )
    except x509.ExtensionNotFound:
        uris = None
    try:
        is_ca = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return CertificateFacts(
        certificate.public_bytes(DER),
        certificate.not_valid_before_utc,
        certificate.not_valid_after_utc,
        certificate.serial_number,
        uris,
        is_ca,
        certificate.public_key().public_bytes(DER, spki),
    )


def test_certificate_facts_equal_what_cryptography_reads(
    lib: Libcrypto, ca: CertificateAuthority, tmp_path: Path
) -> None:
    certificates = _certificates(ca, tmp_path)
    pem = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certificates.values())
    read = workload_pki.read_certificates(pem, "test bundle")
    assert len(read) == len(certificates)
    for (name, certificate), facts in zip(certificates.items(), read, strict=True):
        assert facts == _expected(certificate), name
        assert facts == CryptographyPki().certificate_facts(facts.der), name  # the fallback too
        assert facts.fingerprint == fingerprint(certificate), name
    by_name = dict(zip(certificates, read, strict=True))
    assert by_name["leaf"].uris == (FRONTEND.uri,)
    assert by_name["two URI SANs"].uris == (FRONTEND.uri, "a:b")
    assert by_name["no URI SAN"].uris == ()
    assert by_name["root"].uris is None
    assert [by_name[n].is_ca for n in ("leaf", "root", "intermediate")] == [False, True, True]


@pytest.mark.parametrize(
    ("make", "facts"),
    [
        (lambda: ec.generate_private_key(ec.SECP256R1()), ("EC", 256, "prime256v1")),
        (lambda: ec.generate_private_key(ec.SECP384R1()), ("EC", 384, "secp384r1")),
        (lambda: rsa.generate_private_key(65537, 2048), ("RSA", 2048, None)),
    ],
)
def test_key_facts_equal_what_cryptography_reads(lib: Libcrypto, make, facts) -> None:
    key = make()
    read = workload_pki.read_private_key(private_key_pem(key))
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert read.public_key == key.public_key().public_bytes(DER, spki)
    assert (read.algorithm, read.bits, read.group) == facts
    assert read == CryptographyPki().key_facts(private_key_pem(key))


def test_weak_keys_are_refused(lib: Libcrypto) -> None:
    weak = private_key_pem(rsa.generate_private_key(65537, 1024))
    with pytest.raises(ValueError, match=r"key\.pem: the key is RSA of 1024 bits"):
        workload_pki.read_private_key(weak, "key.pem")
    other_curve = private_key_pem(ec.generate_private_key(ec.SECP256K1()))
    with pytest.raises(ValueError, match="the key is on curve secp256k1"):
        workload_pki.read_private_key(other_curve)


def test_garbage_gets_a_clear_error(lib: Libcrypto, ca: CertificateAuthority) -> None:
    with pytest.raises(ValueError, match=r"libcrypto d2i_X509 failed: error:\w+:asn1"):
        workload_pki.read_der_certificate(b"\x30\x03\x02\x01\x00")
    with pytest.raises(ValueError, match="libcrypto d2i_X509 failed"):
        workload_pki.read_der_certificate(b"")
    der = ca.roots[0].public_bytes(DER)
    with pytest.raises(ValueError, match=f"read {len(der)} of {len(der) + 1} bytes"):
        workload_pki.read_der_certificate(der + b"\0")
    with pytest.raises(ValueError, match=r"^bundle.pem holds no readable PEM certificate \(no"):
        workload_pki.read_certificates(b"hello", "bundle.pem")
    broken = b"-----BEGIN CERTIFICATE-----\nMII*\n-----END CERTIFICATE-----\n"
    with pytest.raises(ValueError, match=r"bundle\.pem holds no readable PEM certificate: block 1"):
        workload_pki.read_certificates(broken, "bundle.pem")
    not_a_certificate = b"-----BEGIN CERTIFICATE-----\nMAMCAQA=\n-----END CERTIFICATE-----\n"
    with pytest.raises(
        ValueError, match=r"bundle\.pem: certificate 2 cannot be read: libcrypto d2i_X509 failed"
    ):
        workload_pki.read_certificates(ca.trust_bundle_pem() + not_a_certificate, "bundle.pem")
    with pytest.raises(
        ValueError, match=r"key\.pem is not an unencrypted PEM private key: libcrypto"
    ):
        workload_pki.read_private_key(b"-----BEGIN PRIVATE KEY-----\nAA==\n", "key.pem")
    encrypted = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(ValueError, match="the private key is encrypted"):
        workload_pki.read_private_key(encrypted)
    with pytest.raises(LibcryptoError, match="PEM_read_bio_PrivateKey failed"):
        lib.csr_pem(b"not a key", FRONTEND.uri)


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_thousands_of_keys_csrs_and_reads_free_what_they_make(
    lib: Libcrypto, ca: CertificateAuthority
) -> None:
    """Each round allocates some KiB in OpenSSL: one X509_REQ left unfreed per round made RSS
    grow by 3 KiB a round here; growth stays under a third of a KiB a round."""
    der = ca.issue(make_csr(ec.generate_private_key(ec.SECP256R1()), FRONTEND), FRONTEND)
    leaf = der.leaf.public_bytes(DER)

    def rounds(count: int) -> None:
        for _ in range(count):
            key_pem = lib.new_ec_key_pem()
            lib.csr_pem(key_pem, FRONTEND.uri)
            lib.key_facts(key_pem)
            lib.certificate_facts(leaf)

    rounds(200)  # allocator pools warmed up
    before = _rss_kib()
    rounds(1500)
    assert _rss_kib() - before < 500


def test_without_libcrypto_cryptography_does_the_same(
    fallback: None, ca: CertificateAuthority, caplog: pytest.LogCaptureFixture
) -> None:
    assert isinstance(workload_pki.backend(), CryptographyPki)
    assert "using the cryptography package instead" in caplog.text
    key_pem = workload_pki.new_key_pem()
    csr = workload_pki.make_csr_pem(key_pem, FRONTEND)
    assert requested_identities(read_csr(csr)) == [FRONTEND.uri]
    issued = ca.issue(csr, FRONTEND, LIFETIME)
    credentials = WorkloadCredentials.from_pem(key_pem, issued.chain_pem, ca.trust_bundle_pem())
    assert (credentials.identity, credentials.serial) == (FRONTEND, issued.serial)


def test_a_library_without_the_symbols_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OSError, match="nonexistent"):
        Libcrypto("/nonexistent/libcrypto.so.3")
    monkeypatch.setattr(libcrypto, "_loaded", [])
    monkeypatch.setattr(libcrypto, "library_path", lambda: "libc.so.6")
    reason = libcrypto.load()
    assert isinstance(reason, str)
    assert reason.startswith("libcrypto (libc.so.6) cannot be used: ")
    assert "OpenSSL_version_num" in reason


# The workload side in a fresh process: make a key and CSR, read the CA's answer (on stdin),
# build both TLS contexts, verify a peer's DER; then list what of cryptography got loaded.
WORKLOAD = """
import json, sys
import tulle.proxy.app, tulle.client, tulle.client.runtime, tulle.agent.agent
from tulle.security import workload_pki
from tulle.security.material import WorkloadCredentials
from tulle.security.verify import peer_identity_from_der
key = workload_pki.new_key_pem()
print(workload_pki.make_csr_pem(key, None).decode(), flush=True)
answer = json.loads(sys.stdin.readline())
creds = WorkloadCredentials.from_pem(key, answer["chain"].encode(), answer["bundle"].encode())
creds.server_context(True), creds.client_context()
leaf = workload_pki.read_certificates(creds.chain_pem, "chain")[0]
print(json.dumps({"identity": peer_identity_from_der(leaf.der).uri,
                  "loaded": sorted(m for m in sys.modules if m.startswith("cryptography"))}))
"""


def test_a_workload_process_never_loads_cryptography(ca: CertificateAuthority) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WORKLOAD],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None
        assert proc.stdout is not None
        csr = ""
        while not csr.endswith("-----END CERTIFICATE REQUEST-----\n"):
            line = proc.stdout.readline()
            assert line, f"the workload process ended early: {csr!r}"
            csr += line
        issued = ca.issue(csr.encode(), PAYMENT, LIFETIME)
        answer = {"chain": issued.chain_pem.decode(), "bundle": ca.trust_bundle_pem().decode()}
        out, _ = proc.communicate(json.dumps(answer) + "\n", timeout=60)
    assert proc.returncode == 0
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"identity": PAYMENT.uri, "loaded": []}
