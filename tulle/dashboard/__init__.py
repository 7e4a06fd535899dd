"""The dashboard's front end, built: ``static/`` holds what Vite made from the sources in
``dashboard/`` at the repository's root (``make dashboard`` rebuilds it with ``npm ci``), shipped
in the wheel so that ``pip install`` users need no Node. The control plane serves these files
(``tulle controlplane`` hands it this directory); the pages read the control plane's HTTP API
like any client. ``static/build-info.json`` records a hash of the sources it was built from
(:func:`sources_hash`), which a test compares with the sources."""

from __future__ import annotations

import hashlib
from pathlib import Path

STATIC = Path(__file__).parent / "static"
BUILD_INFO = "build-info.json"
SOURCES = ("index.html", "package.json", "package-lock.json", "vite.config.js", "scripts", "src")
"""What the build is made from, under ``dashboard/`` (``src`` is every file in it)."""


def assets() -> Path | None:
    """The built files' directory, or None when the package has none (a source tree where
    ``make dashboard`` has not run)."""
    return STATIC if (STATIC / "index.html").is_file() else None


def sources_hash(root: Path) -> str:
    """SHA-256 over the front end's sources under ``root`` (``dashboard/``): each file's path
    and bytes, in path order (the same function as ``dashboard/scripts/hash.mjs``)."""
    files: list[Path] = []
    for name in SOURCES:
        path = root / name
        files += sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()
