"""Library tests use the end-to-end fixtures: a real control plane and real backends."""

from tests.e2e.conftest import (  # noqa: F401 - fixtures
    control_plane,
    no_process_left_behind,
    processes,
)
