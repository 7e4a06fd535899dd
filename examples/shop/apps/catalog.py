"""The catalog service (v1 and v2, from $CATALOG_VERSION): the items for sale. ``POST /break``
makes this replica fail every request (503) until ``POST /heal``."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import serve

VERSION = os.environ.get("CATALOG_VERSION", "v1")
ITEMS = [{"id": 1, "name": "tulle, 1 m", "price": 4.5}, {"id": 2, "name": "lace", "price": 12.0}]
if VERSION == "v2":  # the canary: a new item
    ITEMS.append({"id": 3, "name": "organza", "price": 9.0})


broken = [False]


def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    if path in ("/break", "/heal"):
        broken[0] = path == "/break"
        return 200, {"broken": broken[0], "replica": os.environ.get("TULLE_REPLICA", "")}
    if broken[0]:
        return 503, {"error": f"catalog {VERSION} broken on purpose"}
    if path.startswith("/items"):
        return 200, {"version": VERSION, "items": ITEMS}
    return 404, {"error": f"no {path}"}


if __name__ == "__main__":
    serve(f"catalog {VERSION}", handle)
