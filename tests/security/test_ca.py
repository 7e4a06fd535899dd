"""The CA: leaves for proven identities only, its root kept across restarts, and the user's own CA."""

from __future__ import annotations

import ipaddress
import stat
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.security.helpers import FRONTEND, PAYMENT, TRUST_DOMAIN, der_chain, write_user_ca
from tulle.security import (
    CaError,
    CertificateAuthority,
    CsrRefused,
    SpiffeId,
    make_csr,
    new_private_key,
    verify_chain,
)
from tulle.security.certificates import ROOT_LIFETIME, build_root
from tulle.security.keys import private_key_pem
from tulle.security.rootstore import CaStoreError


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_ca_has_a_ten_year_p256_root(ca):
    [root] = ca.roots
    assert ca.signer == root
    assert root.public_key().curve.name == "secp256r1"
    assert root.not_valid_after_utc - root.not_valid_before_utc >= ROOT_LIFETIME
    assert root.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    usage = root.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert root.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Tulle"
    common_name = root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert str(common_name).startswith("Tulle root CA cluster.local")
    assert ca.trust_bundle_pem() == root.public_bytes(serialization.Encoding.PEM)
    assert not ca.is_plugin


def test_a_leaf_names_the_proven_identity_and_is_a_spiffe_svid(ca):
    key = new_private_key()
    now = datetime.now(UTC)
    issued = ca.issue(make_csr(key, FRONTEND), FRONTEND, timedelta(hours=2), now=now)
    leaf = issued.leaf
    assert issued.identity == FRONTEND
    assert issued.serial == leaf.serial_number > 0
    assert issued.not_before == now.replace(microsecond=0) - timedelta(minutes=1)
    assert issued.not_after == (now + timedelta(hours=2)).replace(microsecond=0)
    assert leaf.public_key() == key.public_key()
    assert leaf.subject == x509.Name([])
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.critical
    assert list(san.value) == [x509.UniformResourceIdentifier(FRONTEND.uri)]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature
    assert usage.key_encipherment
    assert not usage.key_cert_sign
    assert list(leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    aki = leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.signer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    # Leaf first, and no root: a self-managed CA's chain is the leaf alone.
    assert x509.load_pem_x509_certificates(issued.chain_pem) == [leaf]
    assert verify_chain(der_chain(issued.chain_pem), ca.roots, now) == FRONTEND


def test_serials_are_random(ca):
    csr = make_csr(new_private_key(), FRONTEND)
    serials = {ca.issue(csr, FRONTEND, timedelta(hours=1)).serial for _ in range(5)}
    assert len(serials) == 5


def test_a_csr_with_no_san_gets_the_callers_identity(ca):
    key = new_private_key()
    bare = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    issued = ca.issue(bare, PAYMENT, timedelta(hours=1))
    san = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [PAYMENT.uri]


def test_a_csr_asking_for_another_identity_is_refused(ca):
    csr = make_csr(new_private_key(), PAYMENT)
    with pytest.raises(CsrRefused) as refused:
        ca.issue(csr, FRONTEND, timedelta(hours=1))
    assert str(refused.value) == (
        "CSR asks for spiffe://cluster.local/ns/default/sa/payment but the caller is "
        "spiffe://cluster.local/ns/default/sa/frontend"
    )


def test_a_csr_asking_for_a_dns_name_or_ip_is_refused(ca):
    key = new_private_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(FRONTEND.uri),
                    x509.DNSName("payment.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                ]
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    with pytest.raises(CsrRefused, match=r"asks for DNS:payment.default.svc, IP:10.0.0.1"):
        ca.issue(csr, FRONTEND, timedelta(hours=1))


def test_the_ca_issues_only_in_its_trust_domain(ca):
    stranger = SpiffeId("other.example", "default", "frontend")
    with pytest.raises(CsrRefused, match=r"issues for trust domain cluster\.local, not for spiffe"):
        ca.issue(make_csr(new_private_key(), stranger), stranger, timedelta(hours=1))


def test_a_leaf_never_outlives_its_signer(ca):
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(days=20000))
    assert issued.not_after == ca.signer.not_valid_after_utc


def test_a_non_positive_lifetime_is_refused(ca):
    with pytest.raises(ValueError, match="lifetime must be positive"):
        ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(0))


def test_the_control_plane_serving_certificate(ca):
    key = new_private_key()
    issued = ca.issue_server_certificate(key.public_key(), ["cp.tulle.internal", "10.1.2.3"])
    san = issued.leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TRUST_DOMAIN}/ns/tulle-system/sa/tulle-controlplane"
    ]
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "cp.tulle.internal"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    assert issued.identity.service_account == "tulle-controlplane"


# -- persistence ------------------------------------------------------------------------------


def test_the_root_survives_a_restart_in_private_files(ca_directory):
    first = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    again = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    assert again.roots == first.roots
    assert again.signer == first.signer
    assert mode(ca_directory) == 0o700
    keys = list(ca_directory.rglob("key.pem"))
    assert len(keys) == 1
    assert mode(keys[0]) == 0o600
    assert not list(ca_directory.rglob("*.tmp"))
    # What the restarted CA signs verifies against the first one's bundle.
    issued = again.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1))
    assert verify_chain(der_chain(issued.chain_pem), first.roots, datetime.now(UTC)) == FRONTEND


def test_a_ca_key_others_can_read_is_refused_on_load(ca_directory):
    CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    [key] = ca_directory.rglob("key.pem")
    key.chmod(0o644)
    with pytest.raises(CaStoreError, match=r"readable by others \(mode 0644\); chmod 600 it"):
        CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)


def test_a_broken_state_file_is_refused_not_replaced(ca_directory):
    CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    (ca_directory / "state.json").write_text("{")
    with pytest.raises(CaStoreError, match=r"state\.json is not a CA state file"):
        CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)


# -- the user's own CA ------------------------------------------------------------------------


def test_a_plugin_intermediate_sends_its_chain_and_trusts_the_users_root(tmp_path):
    cert, key, chain, root = write_user_ca(tmp_path)
    ca = CertificateAuthority.from_files(cert, key, chain, trust_domain=TRUST_DOMAIN)
    assert ca.is_plugin
    assert ca.roots == [root]
    assert ca.trust_bundle_pem() == root.public_bytes(serialization.Encoding.PEM)
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1))
    intermediate = x509.load_pem_x509_certificate(cert.read_bytes())
    assert x509.load_pem_x509_certificates(issued.chain_pem) == [issued.leaf, intermediate]
    assert verify_chain(der_chain(issued.chain_pem), [root], datetime.now(UTC)) == FRONTEND


def test_a_plugin_chain_without_the_ca_cert_itself_is_accepted(tmp_path):
    cert, key, chain, root = write_user_ca(tmp_path)
    chain.write_bytes(root.public_bytes(serialization.Encoding.PEM))
    ca = CertificateAuthority.from_files(cert, key, chain, trust_domain=TRUST_DOMAIN)
    assert ca.roots == [root]


def test_a_plugin_root_needs_no_chain(tmp_path):
    key = new_private_key()
    root = build_root(key, "users.example", datetime.now(UTC))
    (tmp_path / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "root.key").write_bytes(private_key_pem(key))
    ca = CertificateAuthority.from_files(
        tmp_path / "root.pem", tmp_path / "root.key", None, trust_domain=TRUST_DOMAIN
    )
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1))
    assert x509.load_pem_x509_certificates(issued.chain_pem) == [issued.leaf]
    assert ca.roots == [root]


def test_a_plugin_ca_is_checked(tmp_path):
    cert, key, chain, _root = write_user_ca(tmp_path)
    with pytest.raises(CaError, match="no certificate in the CA chain \\(none given\\) signed"):
        CertificateAuthority.from_files(cert, key, None, trust_domain=TRUST_DOMAIN)
    other_key = tmp_path / "other.key"
    other_key.write_bytes(private_key_pem(new_private_key()))
    with pytest.raises(CaError, match="is not the key of CA certificate"):
        CertificateAuthority.from_files(cert, other_key, chain, trust_domain=TRUST_DOMAIN)
    with pytest.raises(CaError, match="expired at"):
        CertificateAuthority.from_files(
            cert, key, chain, trust_domain=TRUST_DOMAIN, now=datetime.now(UTC) + timedelta(days=400)
        )
    with pytest.raises(CaError, match="does-not-exist"):
        CertificateAuthority.from_files(
            tmp_path / "does-not-exist", key, chain, trust_domain=TRUST_DOMAIN
        )


def test_a_leaf_certificate_is_not_a_plugin_ca(ca, tmp_path):
    key = new_private_key()
    issued = ca.issue(make_csr(key, FRONTEND), FRONTEND, timedelta(hours=1))
    (tmp_path / "leaf.pem").write_bytes(issued.chain_pem)
    (tmp_path / "leaf.key").write_bytes(private_key_pem(key))
    with pytest.raises(CaError, match="is not a CA certificate"):
        CertificateAuthority.from_files(
            tmp_path / "leaf.pem", tmp_path / "leaf.key", None, trust_domain=TRUST_DOMAIN
        )


def test_a_plugin_leaf_is_clamped_to_the_intermediates_expiry(tmp_path):
    cert, key, chain, _root = write_user_ca(tmp_path)
    ca = CertificateAuthority.from_files(cert, key, chain, trust_domain=TRUST_DOMAIN)
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(days=1000))
    assert issued.not_after == ca.signer.not_valid_after_utc
    with pytest.raises(CaError, match="expired at"):
        ca.issue(
            make_csr(new_private_key(), FRONTEND),
            FRONTEND,
            timedelta(hours=1),
            now=datetime.now(UTC) + timedelta(days=366),
        )
