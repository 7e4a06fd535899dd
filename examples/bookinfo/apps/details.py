"""Bookinfo's details service: ``GET /details/<id>`` answers the book's details (upstream's
details v1, a Ruby app, answers the same JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import as_json, serve


def details(method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if method != "GET" or len(parts) != 2 or parts[0] != "details" or not parts[1].isdigit():
        return as_json(400, {"error": "please provide numeric product id"})
    return as_json(200, {
        "id": int(parts[1]), "author": "William Shakespeare", "year": 1595, "type": "paperback",
        "pages": 200, "publisher": "PublisherA", "language": "English",
        "ISBN-10": "1234567890", "ISBN-13": "123-1234567890",
    })  # fmt: skip


if __name__ == "__main__":
    serve("details", details)
