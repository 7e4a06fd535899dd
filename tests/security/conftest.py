"""Fixtures of the security tests: CAs made once per module (EC keys are cheap, but not free)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.security.helpers import TRUST_DOMAIN
from tulle.security import CertificateAuthority


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """The mesh's self-managed CA for ``cluster.local``."""
    return CertificateAuthority.load_or_create(tmp_path_factory.mktemp("ca") / "ca", TRUST_DOMAIN)


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory: pytest.TempPathFactory) -> CertificateAuthority:
    """Another mesh's CA, for the same trust domain name: its leaves must not be trusted."""
    return CertificateAuthority.load_or_create(
        tmp_path_factory.mktemp("other") / "ca", TRUST_DOMAIN
    )


@pytest.fixture
def ca_directory(tmp_path: Path) -> Path:
    """A directory for a CA a test makes itself (not made yet)."""
    return tmp_path / "ca"
