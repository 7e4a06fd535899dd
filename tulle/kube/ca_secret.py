"""The mesh CA's roots kept in a Secret, so that every control-plane replica signs with the same
root (``tulle-ca-secret`` in the control plane's namespace; ``tulle install`` lets the control
plane create it and read and update only it).

This module moves bytes: the Secret's ``data`` (file name -> content) in and out, with the
optimistic concurrency the API server offers. Which files those are, and how they become the
CA, is tulle.control.kube_ca's. Calls are synchronous (lightkube's ``Client``): the CA is read
once at start, before anything is served, and written after a rotation step, from a thread."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from pathlib import Path

import httpx2
from lightkube import ApiError, Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from tulle.kube.client import load_config
from tulle.kube.install.names import CA_SECRET, labels

KEY = re.compile(r"[-._a-zA-Z0-9]+")
"""What the API server accepts as a key of a Secret's data."""


class CaSecretError(ValueError):
    """The Secret cannot be read or written: which one, and why."""


class CaSecretConflict(CaSecretError):  # noqa: N818 (the API server's word)
    """Another replica created or changed the Secret first (409): read it again."""


@dataclass(frozen=True)
class StoredSecret:
    """The Secret's files and the resourceVersion they were read at."""

    files: dict[str, bytes]
    resource_version: str


class CaSecret:
    """The CA's Secret in ``namespace`` (``name``: the one tulle install's Role names)."""

    def __init__(self, client: Client, namespace: str, name: str = CA_SECRET) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None, namespace: str) -> CaSecret:
        """The Secret on the API server of ``kubeconfig``/``context`` (in-cluster without)."""
        config = load_config(kubeconfig, context)
        return cls(Client(config=config, timeout=httpx2.Timeout(10.0)), namespace)

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def read(self) -> StoredSecret | None:
        """The Secret's files, None when it does not exist."""
        try:
            secret = self.client.get(Secret, self.name, namespace=self.namespace)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise CaSecretError(f"{self}: {status_reason(error)}") from None
        except httpx2.HTTPError as error:
            raise CaSecretError(f"{self}: the API server cannot be reached: {error}") from None
        files: dict[str, bytes] = {}
        for key, value in (secret.data or {}).items():
            try:
                files[key] = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise CaSecretError(f"{self}: data.{key} is not base64") from None
        version = secret.metadata.resourceVersion if secret.metadata is not None else None
        return StoredSecret(files, str(version or ""))

    def create(self, files: dict[str, bytes]) -> None:
        """Create the Secret with ``files``; :class:`CaSecretConflict` when it exists."""
        self._write(files, None)

    def replace(self, files: dict[str, bytes], resource_version: str) -> None:
        """Replace the Secret's data with ``files`` if it is still at ``resource_version``;
        :class:`CaSecretConflict` when it changed meanwhile."""
        self._write(files, resource_version)

    def _write(self, files: dict[str, bytes], resource_version: str | None) -> None:
        for key in files:
            if not KEY.fullmatch(key):
                raise CaSecretError(f"{self}: {key!r} cannot be a key of a Secret")
        data = {key: base64.b64encode(value).decode() for key, value in sorted(files.items())}
        metadata = ObjectMeta(
            name=self.name,
            namespace=self.namespace,
            labels=labels(self.namespace),
            resourceVersion=resource_version,
        )
        secret = Secret(metadata=metadata, type="Opaque", data=data)
        try:
            if resource_version is None:
                self.client.create(secret)
            else:
                self.client.replace(secret)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 409:
                raise CaSecretConflict(f"{self} changed meanwhile") from None
            raise CaSecretError(f"{self}: {status_reason(error)}") from None
        except httpx2.HTTPError as error:
            raise CaSecretError(f"{self}: the API server cannot be reached: {error}") from None

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()


def status_reason(error: httpx2.HTTPStatusError) -> str:
    """An API server's refusal: its code and message (lightkube's ``ApiError`` parsed it from
    the Status the server sent; anything else is the HTTP status)."""
    if isinstance(error, ApiError):
        return f"{error.status.code} {error.status.message}"
    return f"HTTP {error.response.status_code}"
