"""The proxyless gRPC demo that ``make demo`` runs does what the README says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

DEMO = Path(__file__).parents[2] / "examples" / "grpc" / "demo.py"


def test_the_demo_shifts_all_traffic_to_v2_and_the_client_is_synced():
    result = subprocess.run(
        [sys.executable, str(DEMO)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "greeter v1 serving on 127.0.0.1:" in out
    assert "xds:///greeter: 100% v2" in out
    final_table = out.rsplit("xds:///greeter: 100% v2", 1)[1]
    assert "v2" in final_table
    assert "100%" in final_table
    assert "error" not in final_table
    assert "v1 " not in final_table
    assert out.count("'SYNCED'") == 4
