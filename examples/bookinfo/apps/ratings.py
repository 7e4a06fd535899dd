"""Bookinfo's ratings service: ``GET /ratings/<id>`` answers each reviewer's stars (upstream's
ratings v1, a Node.js app, answers the same JSON)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import as_json, serve


def ratings(method: str, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
    parts = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if method != "GET" or len(parts) != 2 or parts[0] != "ratings" or not parts[1].isdigit():
        return as_json(400, {"error": "please provide numeric product ID"})
    return as_json(200, {"id": int(parts[1]), "ratings": {"Reviewer1": 5, "Reviewer2": 4}})


if __name__ == "__main__":
    serve("ratings", ratings)
