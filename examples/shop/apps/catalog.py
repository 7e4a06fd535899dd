"""The catalog service (v1 and v2, from $CATALOG_VERSION): the items for sale."""

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


def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    if path.startswith("/items"):
        return 200, {"version": VERSION, "items": ITEMS}
    return 404, {"error": f"no {path}"}


if __name__ == "__main__":
    serve(f"catalog {VERSION}", handle)
