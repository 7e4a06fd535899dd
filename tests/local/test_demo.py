"""``make demo``'s script (``examples/shop/demo.py``) brings the shop up, shows the live table
with traffic on every service and the canary split, and on Ctrl-C stops the traffic and the mesh,
leaving nothing running."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.e2e.conftest import wait_until
from tests.local.conftest import REPO, Mesh, assert_nothing_left


def test_the_demo_shows_every_service_live_and_ctrl_c_stops_the_mesh(tmp_path):
    state_dir = tmp_path / "state"
    demo = subprocess.Popen(
        [sys.executable, "examples/shop/demo.py", "--state-dir", str(state_dir),
         "--api-port", "0", "--xds-port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        wait_until((state_dir / "state.json").exists, timeout=60)
        wait_until(lambda: Mesh(state_dir).status()["phase"] == "running", timeout=60)
        time.sleep(7)  # a few refreshes of the table under the demo's traffic
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        out, _ = demo.communicate(timeout=60)
    assert demo.returncode == 0, out
    assert "cart           cart-0           library  1/1" in out  # tulle up's status table
    live = out.rsplit("SERVICE", 1)[1]  # the last refresh of the live table
    rows = {tuple(line.split()[:2]) for line in live.splitlines()[1:] if line.strip()}
    assert {("catalog", "catalog-v1"), ("catalog", "catalog-v2"), ("payment", "payment"),
            ("cart", "cart"), ("auth", "auth")} <= rows  # fmt: skip
    assert "tulle down: stopped" in out
    assert_nothing_left(state_dir)
