"""``CertificateAuthority.reload``: a CA whose store another writer replaced (another
control-plane replica took a rotation step, tulle.control.kube_ca) signs and trusts by it."""

from __future__ import annotations

from pathlib import Path

from tulle.security.ca import CertificateAuthority


def test_a_ca_takes_the_roots_another_writer_stored(tmp_path: Path) -> None:
    leader = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
    follower = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
    assert follower.reload() is False  # nothing changed
    leader.stage_new_root()
    assert follower.trust_bundle_pem() != leader.trust_bundle_pem()
    assert follower.reload() is True
    assert follower.trust_bundle_pem() == leader.trust_bundle_pem()
    assert follower.staged_root == leader.staged_root
    leader.activate_staged_root()
    assert follower.reload() is True
    assert follower.signer == leader.signer
    assert follower.reload() is False


def test_a_plug_in_ca_is_never_reloaded(tmp_path: Path) -> None:
    own = CertificateAuthority.load_or_create(tmp_path / "own", "cluster.local")
    root = tmp_path / "root.pem"
    root.write_bytes(own.trust_bundle_pem())
    key = next((tmp_path / "own" / "roots").iterdir()) / "key.pem"
    plugin = CertificateAuthority.from_files(root, key, None, trust_domain="cluster.local")
    assert plugin.reload() is False
