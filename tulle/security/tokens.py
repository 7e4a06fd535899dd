"""Credentials that prove a workload's identity to the CA, and the control plane's admin token.

An ``Authenticator`` turns a credential into the ``WorkloadIdentity`` it proves. In local mode that
is a per-replica bootstrap token (``BootstrapTokens``): the runner issues one for each replica's
namespace and service account into a 0600 file it passes to the replica by path, and records only
the token's SHA-256 in a 0600 JSON file of the state directory, which the control plane re-reads
when it changes. Kubernetes service-account tokens (TokenReview) will sit behind the same protocol.
Refusal reasons never contain the credential.

A token file must be private (0600), with one exception: the kubelet's projected
service-account token (Kubernetes). The kubelet writes it 0644, owned by root, unless every
container of the pod runs as one user, which an injected pod never does (``tulle-init`` runs as
root, the sidecar as 1337); its mode is not the pod's to choose, and its readers are the pod's
own containers. Such a file is recognised by the layout the kubelet's atomic writer gives every
projected volume, which a file written by hand or by ``tulle up`` never has: the file is a
symlink ``..data/<name>`` and its directory holds the ``..data`` symlink. It may be readable by
others, never writable.
"""

from __future__ import annotations

import fcntl
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tulle.security.files import (
    UnsafeFileError,
    check_private,
    create_exclusively,
    private_directory,
    shared_directory,
    write_atomically,
)
from tulle.security.spiffe import SpiffeId, check_segment

TOKENS_FILE = "bootstrap-tokens.json"
TOKENS_DIRECTORY = "bootstrap-tokens"
ADMIN_TOKEN_FILE = "admin-token"
MAX_TOKEN_CHARACTERS = 4096
_REPLICA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")


class Unauthenticated(Exception):  # noqa: N818 (named for the outcome, as the API promises)
    """A credential that proves nothing; the message says why, without the credential."""


class TokenFileError(ValueError):
    """A token file that cannot be used: missing, empty, or open to other users."""


@dataclass(frozen=True)
class WorkloadIdentity:
    """Who a credential proves the caller is: a service account in a namespace."""

    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_segment("namespace", self.namespace)
        check_segment("service account", self.service_account)

    def spiffe_id(self, trust_domain: str) -> SpiffeId:
        """This identity's SPIFFE ID in ``trust_domain`` (``ValueError`` for invalid names)."""
        return SpiffeId(trust_domain, self.namespace, self.service_account)


class Authenticator(Protocol):
    """Checks a credential a caller presents and says which workload identity it proves."""

    def authenticate(self, credential: str) -> WorkloadIdentity:
        """The identity ``credential`` proves; ``Unauthenticated`` (with a reason) otherwise."""
        ...


def token_digest(token: str) -> str:
    """The SHA-256 of ``token``, in hex: all that is ever stored of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def bearer_token(authorization: str) -> str | None:
    """The credential of an ``Authorization: Bearer <token>`` value (None when the value is
    not that), as the HTTP API, the CA and xDS all take it."""
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    return credential if scheme.lower() == "bearer" and credential else None


KUBELET_DATA_LINK = "..data"


def kubelet_projected(path: Path) -> bool:
    """Whether ``path`` is a file of a volume the kubelet projects (its atomic writer's layout:
    ``path`` a symlink to ``..data/<name>``, ``..data`` a symlink beside it)."""
    try:
        target = os.readlink(path)
    except OSError:
        return False
    return (
        target == f"{KUBELET_DATA_LINK}/{path.name}"
        and (path.parent / KUBELET_DATA_LINK).is_symlink()
    )


def check_token_file(path: Path) -> None:
    """``UnsafeFileError`` when other users may read or write the token file ``path`` (a
    kubelet-projected token may be readable by others, never writable)."""
    if not kubelet_projected(path):
        check_private(path, "token file")
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o022:
        raise UnsafeFileError(
            f"token file {path} (projected by the kubelet) is writable by others (mode {mode:04o})"
        )


def read_token_file(path: Path) -> str:
    """The token in ``path``, surrounding whitespace removed.

    ``TokenFileError`` when the file is missing or empty, ``UnsafeFileError`` (a
    ``PermissionError``) when other users may read or write it (only write, for the kubelet's
    projected token: see the module's docstring).
    """
    try:
        check_token_file(path)
        token = path.read_text().strip()
    except FileNotFoundError:
        raise TokenFileError(f"token file {path} does not exist") from None
    except UnicodeDecodeError:
        raise TokenFileError(f"token file {path} is not text") from None
    if not token:
        raise TokenFileError(f"token file {path} is empty")
    return token


def admin_token(state_dir: Path) -> str:
    """The control plane's admin API token, made on the first call (``state_dir/admin-token``,
    0600) and read on later ones, by the control plane and the CLI alike."""
    shared_directory(state_dir)
    path = state_dir / ADMIN_TOKEN_FILE
    if not path.exists():
        create_exclusively(path, (secrets.token_urlsafe(32) + "\n").encode())
    return read_token_file(path)


def _private_opener(path: str, flags: int) -> int:
    """``os.open`` creating files 0600 (for ``open(..., opener=)``)."""
    return os.open(path, flags, 0o600)


@dataclass(frozen=True)
class _Record:
    """What is kept of one replica's token: its digest and the identity it proves."""

    digest: str
    identity: WorkloadIdentity


class BootstrapTokens:
    """Per-replica bootstrap tokens in a state directory; an ``Authenticator``.

    The runner calls ``issue`` and ``revoke``; the control plane (another process) calls
    ``authenticate``, which re-reads the records whenever the file changed on disk. Writers in
    several processes take a lock file, so no record is lost.
    """

    def __init__(self, state_dir: Path) -> None:
        """Keep tokens under ``state_dir`` (created if missing)."""
        self.state_dir = state_dir
        self.records_path = state_dir / TOKENS_FILE
        self._records: dict[str, _Record] = {}
        self._seen: tuple[int, int, int] | None = None  # (inode, size, mtime) last read
        self._lock = threading.Lock()

    def token_path(self, replica: str) -> Path:
        """The file ``replica``'s token is written to."""
        if not _REPLICA_NAME.fullmatch(replica):
            raise ValueError(
                f"replica name {replica!r} must be 1 to 253 letters, digits, '.', '-' or '_', "
                "starting with a letter or digit"
            )
        return self.state_dir / TOKENS_DIRECTORY / f"{replica}.token"

    def issue(self, namespace: str, service_account: str, replica: str) -> Path:
        """A new token proving ``namespace``/``service_account`` for ``replica``, written to its
        own 0600 file, whose path is returned; replaces any earlier token of ``replica``."""
        identity = WorkloadIdentity(namespace, service_account)
        path = self.token_path(replica)
        token = secrets.token_urlsafe(32)
        with self._exclusive() as records:
            private_directory(path.parent)
            write_atomically(path, (token + "\n").encode())
            records[replica] = _Record(token_digest(token), identity)
        return path

    def revoke(self, replica: str) -> bool:
        """Forget ``replica``'s token and delete its file; False if it had none."""
        path = self.token_path(replica)
        with self._exclusive() as records:
            known = records.pop(replica, None) is not None
        path.unlink(missing_ok=True)
        return known

    def authenticate(self, credential: str) -> WorkloadIdentity:
        """The identity ``credential`` (a bootstrap token) proves; ``Unauthenticated`` if none.

        Every record is compared, in constant time over digests, whatever matches.
        """
        return self.authenticate_replica(credential)[1]

    def authenticate_replica(self, credential: str) -> tuple[str, WorkloadIdentity]:
        """The replica ``credential`` was issued to, and the identity it proves."""
        token = credential.strip()
        if not token:
            raise Unauthenticated("no bootstrap token presented")
        if len(token) > MAX_TOKEN_CHARACTERS:
            raise Unauthenticated(f"bootstrap token is longer than {MAX_TOKEN_CHARACTERS} chars")
        digest = token_digest(token)
        try:
            with self._lock:
                records = self._current()
        except (OSError, ValueError) as error:
            raise Unauthenticated(f"bootstrap tokens cannot be checked: {error}") from None
        found: tuple[str, WorkloadIdentity] | None = None
        for replica, record in records.items():
            if hmac.compare_digest(record.digest, digest):
                found = (replica, record.identity)
        if found is None:
            raise Unauthenticated("unknown or revoked bootstrap token")
        return found

    def identities(self) -> dict[str, WorkloadIdentity]:
        """Each replica with a token, and the identity its token proves."""
        with self._lock:
            return {replica: record.identity for replica, record in self._current().items()}

    # -- the records file ----------------------------------------------------------------------

    def _current(self) -> dict[str, _Record]:
        """The records, re-read if the file changed since the last read (caller holds the lock)."""
        try:
            status = check_private(self.records_path, "bootstrap token records")
        except FileNotFoundError:
            self._records, self._seen = {}, None
            return self._records
        signature = (status.st_ino, status.st_size, status.st_mtime_ns)
        if signature != self._seen:
            self._records = self._parse(self.records_path.read_bytes())
            self._seen = signature
        return self._records

    def _parse(self, raw: bytes) -> dict[str, _Record]:
        """The records in the JSON ``raw``; ``ValueError`` naming the file if it is broken."""
        try:
            saved = json.loads(raw)
            return {
                str(replica): _Record(
                    str(entry["sha256"]),
                    WorkloadIdentity(str(entry["namespace"]), str(entry["service_account"])),
                )
                for replica, entry in saved["replicas"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{self.records_path} is not a bootstrap token file: {error!r}"
            ) from None

    @contextmanager
    def _exclusive(self) -> Iterator[dict[str, _Record]]:
        """The records to change, under this process's lock and a lock file for other
        processes; written back (atomically) when the block ends without an error."""
        shared_directory(self.state_dir)
        with (
            self._lock,
            open(self.state_dir / f".{TOKENS_FILE}.lock", "a", opener=_private_opener) as lock_file,
        ):
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            self._seen = None  # read afresh under the lock: another writer may just have written
            records = dict(self._current())
            yield records
            saved = {
                "replicas": {
                    replica: {
                        "sha256": record.digest,
                        "namespace": record.identity.namespace,
                        "service_account": record.identity.service_account,
                    }
                    for replica, record in sorted(records.items())
                }
            }
            write_atomically(self.records_path, (json.dumps(saved, indent=2) + "\n").encode())
            self._records, self._seen = records, None
