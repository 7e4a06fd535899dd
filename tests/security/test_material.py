"""Workload credentials: expiry, TLS contexts loaded without the key on disk, grpcio's files."""

from __future__ import annotations

import os
import stat
import tempfile
from datetime import timedelta

import pytest

from tests.security.helpers import FRONTEND, PAYMENT, credentials, handshake
from tulle.security import WorkloadCredentials, make_csr, new_private_key, private_key_pem
from tulle.security.material import BUNDLE_FILE, CHAIN_FILE, KEY_FILE


@pytest.fixture(scope="module")
def frontend(ca):
    return credentials(ca, FRONTEND, lifetime=timedelta(hours=1))


def test_validity_and_remaining_time(frontend):
    assert frontend.identity == FRONTEND
    assert frontend.not_after - frontend.not_before == timedelta(hours=1, minutes=1)
    middle = frontend.not_before + timedelta(minutes=30)
    assert not frontend.expired(middle)
    assert frontend.remaining(middle) == timedelta(minutes=31)
    assert frontend.expired(frontend.not_after)
    assert frontend.remaining(frontend.not_after + timedelta(hours=1)) == timedelta(0)


def test_files_for_grpcio_round_trip_with_private_modes(tmp_path, frontend):
    directory = tmp_path / "grpc-certs"
    frontend.write_files(directory)
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [CHAIN_FILE, KEY_FILE, BUNDLE_FILE]
    )
    assert stat.S_IMODE((directory / KEY_FILE).stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert WorkloadCredentials.read_files(directory) == frontend
    assert frontend.serial > 0


def test_renewed_files_replace_the_old_ones(tmp_path, ca, frontend):
    directory = tmp_path / "grpc-certs"
    frontend.write_files(directory)
    renewed = credentials(ca, FRONTEND)
    renewed.write_files(directory)
    assert WorkloadCredentials.read_files(directory) == renewed
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        [CHAIN_FILE, KEY_FILE, BUNDLE_FILE]
    )


def test_a_key_that_is_not_the_leafs_is_refused(frontend):
    with pytest.raises(ValueError, match="not the key of the chain's first certificate"):
        WorkloadCredentials.from_pem(
            private_key_pem(new_private_key()), frontend.chain_pem, frontend.bundle_pem
        )


def test_contexts_load_the_key_from_memory(monkeypatch, tmp_path, ca):
    made = []
    real_memfd_create = os.memfd_create

    def spy(*args):
        made.append(args)
        return real_memfd_create(*args)

    monkeypatch.setattr(os, "memfd_create", spy)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    credentials(ca, PAYMENT).server_context(True)
    assert len(made) == 1
    assert list(tmp_path.iterdir()) == []


def test_contexts_load_without_a_memfd_too(monkeypatch, tmp_path, ca, frontend):
    """Where memfd_create is missing, the key goes through a 0700 temporary directory that is
    gone once the context has read it."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)
    real_directory = tempfile.TemporaryDirectory
    modes = []

    def spy(*args, **kwargs):
        directory = real_directory(*args, **kwargs)
        modes.append(stat.S_IMODE(os.stat(directory.name).st_mode))
        return directory

    def no_memfd(*args):
        raise OSError("no memfd here")

    monkeypatch.setattr(os, "memfd_create", no_memfd)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", spy)
    payment = credentials(ca, PAYMENT)
    handshake(payment.server_context(True), frontend.client_context())
    assert modes == [0o700, 0o700]
    assert list(tmp_path.iterdir()) == []


def test_from_issued_keeps_what_the_ca_said(ca):
    key = new_private_key()
    issued = ca.issue(make_csr(key, PAYMENT), PAYMENT, timedelta(minutes=10))
    creds = WorkloadCredentials.from_issued(private_key_pem(key), issued, ca.trust_bundle_pem())
    assert creds.identity == PAYMENT
    assert creds.not_after == issued.not_after
    assert creds.chain_pem == issued.chain_pem


def test_the_key_stays_out_of_the_repr(frontend):
    assert b"PRIVATE KEY" in frontend.key_pem
    assert "PRIVATE KEY" not in repr(frontend)
    assert "frontend" in repr(frontend)
