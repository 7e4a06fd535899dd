"""Private files of the security package: atomic writes, 0700 directories, mode checks.

Keys and tokens are written whole or not at all (a temporary file in the same directory, made with
its final mode, then renamed over the target), so a reader in another process never sees half a
key, and a crash never leaves one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o644
PRIVATE_DIRECTORY_MODE = 0o700


class UnsafeFileError(PermissionError):
    """A secret file other users can read or write: refused, with the command that fixes it."""


def private_directory(directory: Path) -> Path:
    """``directory``, created (with its parents) if missing, and made 0700: for a directory this
    package owns (the CA's, the token files')."""
    directory.mkdir(mode=PRIVATE_DIRECTORY_MODE, parents=True, exist_ok=True)
    if stat.S_IMODE(directory.stat().st_mode) != PRIVATE_DIRECTORY_MODE:
        directory.chmod(PRIVATE_DIRECTORY_MODE)
    return directory


def shared_directory(directory: Path) -> Path:
    """``directory``, created 0700 (with its parents) if missing, its mode left alone if not: for
    a state directory other parts share, whose secret files are each 0600."""
    directory.mkdir(mode=PRIVATE_DIRECTORY_MODE, parents=True, exist_ok=True)
    return directory


def staged_beside(path: Path, data: bytes, mode: int) -> Path:
    """A new file in ``path``'s directory holding ``data`` with ``mode``, flushed to disk, for
    the caller to rename over ``path``."""
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(descriptor, mode)
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return Path(name)


def write_atomically(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> None:
    """Replace ``path`` with ``data`` (file mode ``mode``) in one rename."""
    temporary = staged_beside(path, data, mode)
    try:
        temporary.replace(path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def create_exclusively(path: Path, data: bytes, mode: int = PRIVATE_FILE_MODE) -> bool:
    """Write ``path`` whole unless it exists; True if this call created it.

    Two processes racing to create the same file both see one complete file: the loser's
    ``link`` fails and it reads the winner's.
    """
    temporary = staged_beside(path, data, mode)
    try:
        os.link(temporary, path)
    except FileExistsError:
        return False
    finally:
        temporary.unlink(missing_ok=True)
    return True


def check_private(path: Path, what: str) -> os.stat_result:
    """The stat of ``path``; ``UnsafeFileError`` when other users may read or write it."""
    status = path.stat()
    mode = stat.S_IMODE(status.st_mode)
    if mode & 0o077:
        if mode & 0o044:
            access = "readable"
        elif mode & 0o022:
            access = "writable"
        else:
            access = "accessible"
        raise UnsafeFileError(
            f"{what} {path} is {access} by others (mode {mode:04o}); chmod 600 it"
        )
    return status
