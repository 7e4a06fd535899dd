"""Library tests use the end-to-end fixtures: a real control plane and real backends; and the
library mTLS tests (test_library_mtls_*.py) share one mesh (tests/client/library_mesh.py)."""

from tests.client.library_mesh import mesh  # noqa: F401 - fixture
from tests.e2e.conftest import (  # noqa: F401 - fixtures
    control_plane,
    no_process_left_behind,
    processes,
)
