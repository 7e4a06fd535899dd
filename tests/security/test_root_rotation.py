"""Root rotation: a new root is trusted before it signs; the old one goes only when asked; every
step survives a restart; a plug-in CA and out-of-order steps are refused with the reason."""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta

import pytest

from tests.security.helpers import (
    FRONTEND,
    PAYMENT,
    TRUST_DOMAIN,
    credentials,
    der_chain,
    handshake,
    write_user_ca,
)
from tulle.security import (
    CaError,
    CertificateAuthority,
    PeerRefused,
    make_csr,
    new_private_key,
    verify_chain,
)


def leaf_chain(ca: CertificateAuthority) -> list[bytes]:
    issued = ca.issue(make_csr(new_private_key(), FRONTEND), FRONTEND, timedelta(hours=1))
    return der_chain(issued.chain_pem)


def test_stage_activate_retire(ca_directory):
    now = datetime.now(UTC)
    ca = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    old_root = ca.signer
    old_leaf = leaf_chain(ca)

    new_root = ca.stage_new_root()
    assert ca.staged_root == new_root
    assert ca.roots == [old_root, new_root]  # trusted everywhere ...
    assert ca.signer == old_root  # ... before it signs anything
    assert verify_chain(old_leaf, ca.roots, now) == FRONTEND

    assert ca.activate_staged_root() == new_root
    assert ca.signer == new_root
    assert ca.staged_root is None
    assert ca.roots == [new_root, old_root]
    new_leaf = leaf_chain(ca)
    assert verify_chain(new_leaf, ca.roots, now) == FRONTEND  # both kinds of leaf verify
    assert verify_chain(old_leaf, ca.roots, now) == FRONTEND  # while both roots are trusted

    assert ca.retire_roots() == [old_root]
    assert ca.roots == [new_root]
    assert verify_chain(new_leaf, ca.roots, now) == FRONTEND
    with pytest.raises(PeerRefused, match="does not verify against the trust bundle"):
        verify_chain(old_leaf, ca.roots, now)
    assert ca.retire_roots() == []
    assert len(list(ca_directory.rglob("key.pem"))) == 1  # the old root's key is gone


def test_a_new_leaf_verifies_against_the_bundle_of_before_activation(ca_directory):
    ca = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    ca.stage_new_root()
    bundle_while_staged = ca.roots  # what the workloads received when the root was staged
    ca.activate_staged_root()
    assert verify_chain(leaf_chain(ca), bundle_while_staged, datetime.now(UTC)) == FRONTEND


def test_tls_across_the_rotation(ca_directory):
    ca = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    ca.stage_new_root()
    old_server = credentials(ca, PAYMENT)  # signed by the old root, holds both roots
    ca.activate_staged_root()
    new_client = credentials(ca, FRONTEND)
    handshake(old_server.server_context(True), new_client.client_context())
    handshake(new_client.server_context(True), old_server.client_context())
    ca.retire_roots()
    retired_bundle_client = credentials(ca, FRONTEND)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(old_server.server_context(True), retired_bundle_client.client_context())


def test_every_step_survives_a_restart(ca_directory):
    ca = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    old_root = ca.signer
    new_root = ca.stage_new_root()
    restarted = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    assert restarted.signer == old_root
    assert restarted.staged_root == new_root
    assert restarted.roots == [old_root, new_root]

    restarted.activate_staged_root()
    restarted = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    assert restarted.signer == new_root
    assert restarted.staged_root is None
    assert restarted.roots == [new_root, old_root]

    restarted.retire_roots()
    restarted = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    assert restarted.roots == [new_root]
    assert restarted.signer == new_root


def test_out_of_order_steps_are_refused(ca_directory):
    ca = CertificateAuthority.load_or_create(ca_directory, TRUST_DOMAIN)
    with pytest.raises(CaError, match=r"no root is staged to activate; stage_new_root\(\) first"):
        ca.activate_staged_root()
    staged = ca.stage_new_root()
    with pytest.raises(CaError, match="a new root is already staged"):
        ca.stage_new_root()
    assert ca.retire_roots() == []  # the staged root is not retired: it is about to sign
    assert staged in ca.roots


def test_a_plugin_ca_is_not_rotated_by_tulle(tmp_path):
    cert, key, chain, _root = write_user_ca(tmp_path)
    ca = CertificateAuthority.from_files(cert, key, chain, trust_domain=TRUST_DOMAIN)
    for step in (ca.stage_new_root, ca.activate_staged_root, ca.retire_roots):
        with pytest.raises(CaError, match="this CA is the user's own"):
            step()
    assert ca.staged_root is None
