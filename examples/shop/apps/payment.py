"""The payment service: fails $FAILURE_RATE of payments with 503 and hangs on $HANG_RATE of
them (for 10 s), so retries, timeouts, outlier detection and the circuit breaker have work.
``POST /break`` makes this replica fail every payment until ``POST /heal``."""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import serve

FAILURE_RATE = float(os.environ.get("FAILURE_RATE", "0"))
HANG_RATE = float(os.environ.get("HANG_RATE", "0"))
chance = random.Random()
broken = [False]


def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    if path in ("/break", "/heal"):
        broken[0] = path == "/break"
        return 200, {"broken": broken[0], "replica": os.environ.get("TULLE_REPLICA", "")}
    if not path.startswith("/pay"):
        return 404, {"error": f"no {path}"}
    roll = chance.random()
    if broken[0] or roll < FAILURE_RATE:
        return 503, {"error": "payment provider unavailable"}
    if roll < FAILURE_RATE + HANG_RATE:
        time.sleep(10)
    return 200, {"paid": True, "replica": os.environ.get("TULLE_REPLICA", "")}


if __name__ == "__main__":
    serve("payment", handle)
