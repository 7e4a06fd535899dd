"""The admin token of the control plane's HTTP API, shared by every replica through a Secret
(``tulle-admin-token`` in the control plane's namespace, key ``token``).

Each replica's state directory is an emptyDir, so a token each made for itself would differ
from pod to pod and no user could get it. Instead the first replica to start creates the
Secret (two starting together: one create wins, the other gets 409 and reads the winner's), and
every replica reads it at start. Who may read the Secret is Kubernetes RBAC's business: the
control plane's Role grants ``get`` on this one name (and ``create``, which Kubernetes cannot
limit by name); a person's ``tulle proxy-status --kube`` reads it with their own credentials.

The token's value is never put in a message or a log line."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import httpx2
from lightkube import Client
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Secret

from tulle.kube.ca_secret import status_reason
from tulle.kube.client import load_config
from tulle.kube.install.names import ADMIN_TOKEN_SECRET, labels

TOKEN_KEY = "token"
CREATE_ATTEMPTS = 3
_TOKEN = re.compile(r"[!-~]{16,512}")
"""What the control plane accepts as an admin token: 16 to 512 printable ASCII characters."""


class AdminTokenError(ValueError):
    """The Secret cannot be read or written, or holds no usable token: which, and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # the API server's HTTP status, when it answered


def new_token() -> str:
    """A fresh admin token (as ``tulle controlplane`` makes one in local mode)."""
    return secrets.token_urlsafe(32)


class AdminTokenSecret:
    """The Secret ``name`` in ``namespace``, through ``client`` (lightkube's, synchronous)."""

    def __init__(self, client: Client, namespace: str, name: str = ADMIN_TOKEN_SECRET) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name

    @classmethod
    def connect(
        cls, kubeconfig: Path | None, context: str | None, namespace: str
    ) -> AdminTokenSecret:
        """The Secret on the API server of ``kubeconfig``/``context`` (in-cluster without)."""
        config = load_config(kubeconfig, context)
        return cls(Client(config=config, timeout=httpx2.Timeout(10.0)), namespace)

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    def read(self) -> str | None:
        """The token, None when the Secret does not exist."""
        try:
            secret = self.client.get(Secret, self.name, namespace=self.namespace)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 404:
                return None
            raise AdminTokenError(
                f"cannot read {self}: {status_reason(error)}", error.response.status_code
            ) from None
        except httpx2.HTTPError as error:
            raise AdminTokenError(f"{self}: the API server cannot be reached: {error}") from None
        encoded = (secret.data or {}).get(TOKEN_KEY)
        if encoded is None:
            raise AdminTokenError(f"{self}: no data.{TOKEN_KEY}")
        try:
            token = base64.b64decode(encoded, validate=True).decode("ascii").strip()
        except (binascii.Error, ValueError):
            raise AdminTokenError(f"{self}: data.{TOKEN_KEY} is not base64 ASCII") from None
        if not _TOKEN.fullmatch(token):
            raise AdminTokenError(
                f"{self}: data.{TOKEN_KEY} is not a token (16 to 512 printable ASCII "
                "characters, no spaces)"
            )
        return token

    def ensure(self, make: Callable[[], str] = new_token) -> tuple[str, bool]:
        """The token, and whether this call created the Secret (with ``make()``)."""
        for _ in range(CREATE_ATTEMPTS):
            token = self.read()
            if token is not None:
                return token, False
            token = make()
            if self._create(token):
                return token, True
        raise AdminTokenError(f"{self}: created and deleted again {CREATE_ATTEMPTS} times")

    def _create(self, token: str) -> bool:
        """Create the Secret; False when it exists already (409: another replica won)."""
        secret = Secret(
            metadata=ObjectMeta(
                name=self.name, namespace=self.namespace, labels=labels(self.namespace)
            ),
            type="Opaque",
            data={TOKEN_KEY: base64.b64encode(token.encode()).decode()},
        )
        try:
            self.client.create(secret)
        except httpx2.HTTPStatusError as error:
            if error.response.status_code == 409:
                return False
            raise AdminTokenError(
                f"cannot create {self}: {status_reason(error)}", error.response.status_code
            ) from None
        except httpx2.HTTPError as error:
            raise AdminTokenError(f"{self}: the API server cannot be reached: {error}") from None
        return True
