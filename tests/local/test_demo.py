"""``make demo``'s script (``examples/shop/demo.py``) brings the shop up, shows the live table
with traffic on every service and the canary split, and on Ctrl-C stops the traffic and the mesh,
leaving nothing running."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading

from tests.e2e.conftest import wait_until
from tests.local.conftest import REPO, assert_nothing_left

LIVE = {("catalog", "catalog-v1"), ("catalog", "catalog-v2"), ("payment", "payment"),
        ("cart", "cart"), ("auth", "auth")}  # fmt: skip


def refreshes(out: str) -> list[set[tuple[str, ...]]]:
    """The (service, workload) rows of each refresh of the live table in ``out`` (written out
    one after another when the output is not a terminal)."""
    tables = out.split("SERVICE")[1:]
    return [
        {tuple(line.split()[:2]) for line in t.splitlines()[1:] if line.strip()} for t in tables
    ]


def test_the_demo_shows_every_service_live_and_ctrl_c_stops_the_mesh(tmp_path):
    state_dir = tmp_path / "state"
    demo = subprocess.Popen(
        [sys.executable, "examples/shop/demo.py", "--state-dir", str(state_dir),
         "--api-port", "0", "--xds-port", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(demo.stdout or ()), daemon=True)
    reader.start()
    try:
        # A refresh of the table under the demo's traffic shows every service (catalog-v2 once
        # the 10% canary has had a request).
        wait_until(lambda: any(rows >= LIVE for rows in refreshes("".join(lines))), timeout=90)
    finally:
        demo.send_signal(signal.SIGINT)  # Ctrl-C
        try:
            demo.wait(60)
        finally:
            if demo.poll() is None:
                demo.kill()
                demo.wait()
            reader.join(10)
            demo.stdout.close()
    out = "".join(lines)
    assert demo.returncode == 0, out
    assert "cart           cart-0           library  1/1" in out  # tulle up's status table
    assert "tulle down: stopped" in out
    assert_nothing_left(state_dir)
