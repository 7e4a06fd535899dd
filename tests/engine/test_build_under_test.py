"""Which build the tests run on: the sources, or the compiled build (``make test`` runs part of
the suite a second time with build/compiled first on the path and TULLE_EXPECT_COMPILED=1)."""

from __future__ import annotations

import os

from tulle.codec import http1
from tulle.engine import outbound
from tulle.transport import pool, tls


def test_the_modules_under_test_are_the_build_expected():
    compiled = os.environ.get("TULLE_EXPECT_COMPILED") == "1"
    for module in (outbound, pool, http1, tls):
        assert module.__file__ is not None
        assert module.__file__.endswith(".so") == compiled, (module.__name__, module.__file__)
