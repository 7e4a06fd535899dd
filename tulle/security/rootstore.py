"""The self-managed CA's roots on disk, so a restarted control plane continues where it was.

Layout of the CA directory (0700)::

    state.json             which root signs, which is staged, which are trusted (written last)
    roots/<id>/cert.pem    each root's certificate (0644)
    roots/<id>/key.pem     its private key (0600)

A change writes any new root's files first and ``state.json`` last, each file atomically, so a
crash at any point leaves either the old state or the new one; a root directory that no state names
is only litter, removed at the next change.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from tulle.security.certificates import certificates_pem, fingerprint, load_certificates, same_key
from tulle.security.files import (
    PUBLIC_FILE_MODE,
    check_private,
    private_directory,
    write_atomically,
)
from tulle.security.keys import PrivateKey, load_private_key, private_key_pem

STATE_FILE = "state.json"
ROOTS_DIRECTORY = "roots"
STATE_VERSION = 1


class CaStoreError(ValueError):
    """The CA directory cannot be read back: what is wrong and where."""


def root_name(certificate: x509.Certificate) -> str:
    """A root's short name: the first 16 hex digits of its SHA-256 fingerprint (also its
    directory's name in the store)."""
    return fingerprint(certificate)[:16]


@dataclass(frozen=True)
class StoredRoot:
    """A self-signed root and its key, named by its certificate's fingerprint."""

    certificate: x509.Certificate
    key: PrivateKey

    @property
    def name(self) -> str:
        """The root's directory name: the first 16 hex digits of its SHA-256 fingerprint."""
        return root_name(self.certificate)


@dataclass(frozen=True)
class RootState:
    """Which root signs, which is staged to sign next, and every root in the trust bundle."""

    active: StoredRoot
    staged: StoredRoot | None
    trusted: tuple[StoredRoot, ...]  # active and staged included


class RootStore:
    """Reads and writes a ``RootState`` in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self) -> RootState | None:
        """The saved state, None when there is none yet; ``CaStoreError`` when it is broken."""
        path = self.directory / STATE_FILE
        try:
            raw = path.read_text()
        except FileNotFoundError:
            return None
        try:
            saved = json.loads(raw)
            active_name = str(saved["active"])
            staged_name = None if saved["staged"] is None else str(saved["staged"])
            trusted_names = [str(name) for name in saved["trusted"]]
        except (ValueError, KeyError, TypeError) as error:
            raise CaStoreError(f"{path} is not a CA state file: {error!r}") from None
        roots = {name: self._read_root(name) for name in trusted_names}
        for role, name in (("active", active_name), ("staged", staged_name)):
            if name is not None and name not in roots:
                raise CaStoreError(f"{path}: the {role} root {name} is not among the trusted roots")
        return RootState(
            roots[active_name],
            None if staged_name is None else roots[staged_name],
            tuple(roots.values()),
        )

    def _read_root(self, name: str) -> StoredRoot:
        """The root saved as ``name``, checked (key file private, key matching the cert)."""
        folder = self.directory / ROOTS_DIRECTORY / name
        try:
            check_private(folder / "key.pem", "CA key file")
            key = load_private_key((folder / "key.pem").read_bytes(), str(folder / "key.pem"))
            certificates = load_certificates(
                (folder / "cert.pem").read_bytes(), str(folder / "cert.pem")
            )
        except (OSError, ValueError) as error:
            raise CaStoreError(f"CA root {name} cannot be read: {error}") from None
        root = StoredRoot(certificates[0], key)
        if not same_key(root.certificate, key):
            raise CaStoreError(f"CA root {name}: {folder / 'key.pem'} is not the key of cert.pem")
        return root

    def save(self, state: RootState) -> None:
        """Write ``state``: the files of roots new to it first, then the state file."""
        private_directory(self.directory)
        roots = private_directory(self.directory / ROOTS_DIRECTORY)
        for root in state.trusted:
            folder = roots / root.name
            if (folder / "cert.pem").exists() and (folder / "key.pem").exists():
                continue
            private_directory(folder)
            write_atomically(folder / "key.pem", private_key_pem(root.key))
            write_atomically(
                folder / "cert.pem", certificates_pem([root.certificate]), PUBLIC_FILE_MODE
            )
        saved = {
            "version": STATE_VERSION,
            "active": state.active.name,
            "staged": None if state.staged is None else state.staged.name,
            "trusted": [root.name for root in state.trusted],
        }
        write_atomically(
            self.directory / STATE_FILE,
            (json.dumps(saved, indent=2) + "\n").encode(),
            PUBLIC_FILE_MODE,
        )
        self._remove_unnamed_roots(state)

    def _remove_unnamed_roots(self, state: RootState) -> None:
        """Delete the saved roots ``state`` does not name (retired, or litter of a crash)."""
        keep = {root.name for root in state.trusted}
        for folder in (self.directory / ROOTS_DIRECTORY).iterdir():
            if folder.name not in keep and folder.is_dir():
                shutil.rmtree(folder)
