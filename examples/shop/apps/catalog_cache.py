"""The cached catalog: yesterday's items, always available; the fallback when catalog fails."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from common import serve

ITEMS = [{"id": 1, "name": "tulle, 1 m", "price": 4.5}]


def handle(method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    if path.startswith("/items"):
        return 200, {"version": "cache", "items": ITEMS}
    return 404, {"error": f"no {path}"}


if __name__ == "__main__":
    serve("catalog-cache", handle)
