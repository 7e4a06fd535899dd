"""``make demo``'s script (``examples/shop/demo.py``) brings the shop up, shows the live table
with traffic on every service and the canary split, and leaves nothing running."""

from __future__ import annotations

import subprocess
import sys

from tests.local.conftest import REPO, assert_nothing_left


def test_the_demo_shows_every_service_live_and_stops_the_mesh(tmp_path):
    state_dir = tmp_path / "state"
    result = subprocess.run(
        [sys.executable, "examples/shop/demo.py", "--seconds", "7", "--state-dir",
         str(state_dir), "--api-port", "0", "--xds-port", "0"],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "cart           cart-0           library  1/1" in out  # tulle up's status table
    live = out.rsplit("SERVICE", 1)[1]  # the last refresh of the live table
    rows = {tuple(line.split()[:2]) for line in live.splitlines()[1:] if line.strip()}
    assert {("catalog", "catalog-v1"), ("catalog", "catalog-v2"), ("payment", "payment"),
            ("cart", "cart"), ("auth", "auth")} <= rows  # fmt: skip
    assert "tulle down: stopped" in out
    assert_nothing_left(state_dir)
