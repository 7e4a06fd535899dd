"""The agent's files, replaced together: each is written whole to a temporary file beside it
(made with its final mode, flushed to disk) before any is renamed over its name, and the renames
follow one another with nothing between them.

grpcio's ``file_watcher`` re-reads the key and the chain every ``refresh_interval`` and does not
check that they belong together: a refresh that fell between the key's rename and the chain's
would hand new handshakes a key that is not the certificate's until the next refresh. Writing
each file (and waiting for the disk) between the renames, as one atomic write after another
does, keeps that window open for milliseconds; staging all first closes it to two renames. The
bundle goes first (a new root is trusted before anything it signed arrives)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from tulle.security.files import (
    PRIVATE_FILE_MODE,
    PUBLIC_FILE_MODE,
    private_directory,
    staged_beside,
)
from tulle.security.material import BUNDLE_FILE, CHAIN_FILE, KEY_FILE, WorkloadCredentials


def replace_together(directory: Path, files: list[tuple[str, bytes, int]]) -> None:
    """Replace each ``(name, data, mode)`` in ``directory`` (made 0700), staged first, renamed in
    the order given."""
    private_directory(directory)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, data, mode in files:
            staged.append((staged_beside(directory / name, data, mode), directory / name))
        for temporary, final in staged:
            temporary.replace(final)
    finally:
        for temporary, _ in staged:
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()


def write_credentials(directory: Path, credentials: WorkloadCredentials) -> None:
    """``root-cert.pem``, ``key.pem`` (0600) and ``cert-chain.pem``, replaced together."""
    replace_together(
        directory,
        [
            (BUNDLE_FILE, credentials.bundle_pem, PUBLIC_FILE_MODE),
            (KEY_FILE, credentials.key_pem, PRIVATE_FILE_MODE),
            (CHAIN_FILE, credentials.chain_pem, PUBLIC_FILE_MODE),
        ],
    )
