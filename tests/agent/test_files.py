"""The agent's files are replaced together: all staged (with their final modes) before any is
renamed, so a failure while staging changes none, and no temporary file stays behind."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tulle.agent.files import replace_together


def test_replaced_with_their_modes_and_nothing_left_over(tmp_path: Path):
    certs = tmp_path / "certs"
    replace_together(certs, [("a.pem", b"one", 0o644), ("key.pem", b"two", 0o600)])
    replace_together(certs, [("a.pem", b"three", 0o644), ("key.pem", b"four", 0o600)])
    assert sorted(os.listdir(certs)) == ["a.pem", "key.pem"]
    assert (certs / "a.pem").read_bytes() == b"three"
    assert (certs / "key.pem").read_bytes() == b"four"
    assert (certs / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (certs / "a.pem").stat().st_mode & 0o777 == 0o644
    assert certs.stat().st_mode & 0o777 == 0o700


def test_a_failure_while_staging_changes_nothing(tmp_path: Path):
    certs = tmp_path / "certs"
    replace_together(certs, [("a.pem", b"old", 0o644), ("key.pem", b"old", 0o600)])
    with pytest.raises(TypeError):
        replace_together(certs, [("a.pem", b"new", 0o644), ("key.pem", None, 0o600)])  # type: ignore[list-item]
    assert (certs / "a.pem").read_bytes() == b"old"
    assert (certs / "key.pem").read_bytes() == b"old"
    assert sorted(os.listdir(certs)) == ["a.pem", "key.pem"]
