"""The self-managed CA with ``--registry kubernetes``: its roots live in a Secret, so every
replica signs with the same root and a restarted pod (whose state directory is an emptyDir)
keeps it.

The Secret holds the files of the CA directory (tulle.security.rootstore) under flat keys::

    state.json                 which root signs, which is staged, which are trusted
    roots.<id>.cert.pem        each root's certificate
    roots.<id>.key.pem         its private key

At start (:func:`open_kube_ca`): when the Secret exists its files replace the local CA
directory's, and the CA is loaded from them (checked as any CA directory is: a broken Secret
stops the control plane with the key named); when it does not, the local CA (made now, or
already in the state directory) is written to a new Secret. Two replicas starting together may
both make a root: the Secret's create succeeds for one, the other gets 409 and takes the
winner's. After a rotation step the directory is written back (:func:`upload`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from tulle.control.serving import CA_DIRECTORY, publish_bundle
from tulle.kube.ca_secret import CaSecret, CaSecretConflict, CaSecretError
from tulle.kube.root_cert import RootCertPublisher
from tulle.security.ca import CertificateAuthority
from tulle.security.files import PUBLIC_FILE_MODE, private_directory, write_atomically
from tulle.security.rootstore import ROOTS_DIRECTORY, STATE_FILE, CaStoreError

log = logging.getLogger(__name__)

CREATE_ATTEMPTS = 3
FOLLOW_SECONDS = 5.0
"""How often a replica that does not lead reads the Secret for a rotation the leader took."""


def store_files(directory: Path) -> dict[str, bytes]:
    """The CA directory's files under the Secret's keys (only the roots state.json names)."""
    state = json.loads((directory / STATE_FILE).read_bytes())
    files = {STATE_FILE: (directory / STATE_FILE).read_bytes()}
    for name in state["trusted"]:
        folder = directory / ROOTS_DIRECTORY / str(name)
        for part in ("cert.pem", "key.pem"):
            files[f"{ROOTS_DIRECTORY}.{name}.{part}"] = (folder / part).read_bytes()
    return files


def write_store(directory: Path, files: dict[str, bytes], origin: str) -> None:
    """Make ``directory`` the CA directory the Secret's ``files`` describe (keys: the module's
    docstring); ``CaStoreError`` naming ``origin`` and the key for anything else."""
    if STATE_FILE not in files:
        raise CaStoreError(f"{origin}: no {STATE_FILE} key")
    roots: dict[str, dict[str, bytes]] = {}
    for key, content in files.items():
        if key == STATE_FILE:
            continue
        prefix, _, rest = key.partition(".")
        name, _, part = rest.partition(".")
        if prefix != ROOTS_DIRECTORY or part not in ("cert.pem", "key.pem") or not name.isalnum():
            raise CaStoreError(f"{origin}: unexpected key {key!r}")
        roots.setdefault(name, {})[part] = content
    private_directory(directory)
    folders = private_directory(directory / ROOTS_DIRECTORY)
    for name, parts in roots.items():
        if set(parts) != {"cert.pem", "key.pem"}:
            raise CaStoreError(f"{origin}: root {name} needs both its cert.pem and key.pem keys")
        folder = private_directory(folders / name)
        write_atomically(folder / "key.pem", parts["key.pem"])
        write_atomically(folder / "cert.pem", parts["cert.pem"], PUBLIC_FILE_MODE)
    write_atomically(directory / STATE_FILE, files[STATE_FILE], PUBLIC_FILE_MODE)
    for folder in folders.iterdir():
        if folder.name not in roots and folder.is_dir():
            shutil.rmtree(folder)


def _load(
    secret: CaSecret, directory: Path, trust_domain: str, files: dict[str, bytes]
) -> CertificateAuthority:
    write_store(directory, files, str(secret))
    try:
        return CertificateAuthority.load_or_create(directory, trust_domain)
    except CaStoreError as error:
        raise CaStoreError(f"the CA in {secret}: {error}") from None


def open_kube_ca(secret: CaSecret, state_dir: Path, trust_domain: str) -> CertificateAuthority:
    """The mesh CA whose roots are in ``secret`` (made, and the Secret created, on the first
    start); ``state_dir/root-cert.pem`` written with its bundle. ``CaStoreError`` or
    ``CaSecretError`` say what is wrong."""
    directory = state_dir / CA_DIRECTORY
    for _ in range(CREATE_ATTEMPTS):
        stored = secret.read()
        if stored is not None:
            ca = _load(secret, directory, trust_domain, stored.files)
            log.info("mesh CA read from %s", secret)
            break
        ca = CertificateAuthority.load_or_create(directory, trust_domain)
        try:
            secret.create(store_files(directory))
        except CaSecretConflict:
            continue  # another replica created it first: take its CA
        log.info("mesh CA stored in %s (created)", secret)
        break
    else:
        raise CaSecretError(f"{secret} kept appearing and disappearing; giving up")
    publish_bundle(state_dir, ca)
    return ca


def upload(secret: CaSecret, state_dir: Path) -> None:
    """Write the CA directory (after a rotation step) to ``secret``, replacing what it held."""
    files = store_files(state_dir / CA_DIRECTORY)
    stored = secret.read()
    if stored is None:
        secret.create(files)
    elif stored.files != files:
        secret.replace(files, stored.resource_version)
    log.info("mesh CA written to %s", secret)


class ClusterCa:
    """The CA's Secret and the root certificate's ConfigMaps of one control plane: what
    ``--registry kubernetes`` adds to the CA (the control plane calls it at start, on each
    trust-bundle change and namespace change, and at stop)."""

    def __init__(
        self, kubeconfig: Path | None, context: str | None, namespace: str, state_dir: Path
    ) -> None:
        self.kubeconfig, self.context = kubeconfig, context
        self.namespace = namespace
        self.state_dir = state_dir
        self.secret = CaSecret.connect(kubeconfig, context, namespace)
        self.publisher: RootCertPublisher | None = None
        self.manages_secret = False  # False with the user's own CA (--ca-cert): no Secret
        self.may_write: Callable[[], bool] = lambda: True  # the ConfigMaps: the leader only
        self._uploads: set[asyncio.Task[None]] = set()
        self.on_reload: Callable[[], None] = lambda: None  # the roots changed under a follower
        self.ca: CertificateAuthority | None = None
        self._follow: asyncio.Task[None] | None = None

    def open(self, trust_domain: str) -> CertificateAuthority:
        """The self-managed CA, shared through the Secret (blocking: call it in a thread)."""
        self.manages_secret = True
        return open_kube_ca(self.secret, self.state_dir, trust_domain)

    def start(self, ca: CertificateAuthority) -> None:
        """Publish ``ca``'s bundle in every namespace from now on (on the running loop)."""
        self.publisher = RootCertPublisher.connect(
            self.kubeconfig, self.context, self.namespace, ca.trust_bundle_pem
        )
        self.publisher.may_write = self.may_write
        self.publisher.start()
        self.ca = ca
        if self.manages_secret:
            self._follow = asyncio.create_task(self._follow_secret(ca))

    async def _follow_secret(self, ca: CertificateAuthority) -> None:
        """While not leading: take the roots the leader stored (a rotation step) into the
        state directory and the CA, and say so (the bundle is then published as after a
        step of this replica's own)."""
        failed = ""
        while True:
            await asyncio.sleep(FOLLOW_SECONDS)
            if self.may_write():
                continue
            try:
                changed = await asyncio.to_thread(self._take_secret, ca)
                failed = ""
            except (CaSecretError, CaStoreError, OSError, ValueError) as error:
                if str(error) != failed:
                    log.warning("cannot follow the CA in %s: %s", self.secret, error)
                failed = str(error)
                continue
            if changed:
                log.info("mesh CA roots changed in %s (a rotation step): reloaded", self.secret)
                self.on_reload()

    def _take_secret(self, ca: CertificateAuthority) -> bool:
        stored = self.secret.read()
        directory = self.state_dir / CA_DIRECTORY
        if stored is None or stored.files == store_files(directory):
            return False
        write_store(directory, stored.files, str(self.secret))
        return ca.reload()

    def leading_changed(self, leading: bool) -> None:
        """This replica became the leader (publish now) or stopped being it."""
        if leading and self.publisher is not None:
            self.publisher.bundle_changed()

    def bundle_changed(self) -> None:
        """A rotation step: publish the new bundle, and store the CA's roots in the Secret."""
        if self.publisher is not None:
            self.publisher.bundle_changed()
        if self.manages_secret and self.may_write():  # the leader's step: store it
            task = asyncio.create_task(self._upload())
            self._uploads.add(task)
            task.add_done_callback(self._uploads.discard)

    async def _upload(self) -> None:
        try:
            await asyncio.to_thread(upload, self.secret, self.state_dir)
        except (CaSecretError, CaStoreError, OSError) as error:
            log.error("the rotated CA could not be stored in %s: %s", self.secret, error)

    def namespaces_changed(self, namespaces: frozenset[str]) -> None:
        """The registry's namespaces: a new one gets the ConfigMap at once."""
        if self.publisher is not None:
            self.publisher.namespaces_changed(namespaces)

    async def stop(self) -> None:
        """Stop publishing; let a Secret write in progress finish."""
        if self._follow is not None:
            self._follow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follow
        if self._uploads:
            await asyncio.wait(self._uploads, timeout=10)
        if self.publisher is not None:
            await self.publisher.stop()
        self.secret.close()
