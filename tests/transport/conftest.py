"""Fixtures shared by the transport tests: the TLS tests' certificates (one set for the
package: every tests/transport/test_tls_*.py module reads the same files)."""

from __future__ import annotations

import pytest

from tests.tls_material import Material, make_material


@pytest.fixture(scope="package")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tls"))
