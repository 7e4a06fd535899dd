"""The admin token with ``--registry kubernetes``: every replica's is the one in the Secret
``tulle-admin-token`` of the control plane's namespace (tulle.kube.admin_token), created by the
first replica to start. It is written into the state directory's ``admin-token`` (0600) before
the API starts, where the API's authentication (and a CLI in the pod) reads it as in local
mode, so one admin token serves every replica and a user of the cluster can get it."""

from __future__ import annotations

import logging
from pathlib import Path

from tulle.kube.admin_token import AdminTokenError, AdminTokenSecret
from tulle.kube.client import KubeConfigError
from tulle.security.files import shared_directory, write_atomically
from tulle.security.tokens import ADMIN_TOKEN_FILE

log = logging.getLogger(__name__)


def take_shared_admin_token(
    kubeconfig: Path | None, context: str | None, namespace: str, state_dir: Path
) -> Path:
    """Read (or create) the shared admin token and write it to ``state_dir/admin-token``;
    returns that path. ``AdminTokenError`` or ``KubeConfigError`` saying why it cannot."""
    secret = AdminTokenSecret.connect(kubeconfig, context, namespace)
    try:
        token, created = secret.ensure()
    finally:
        secret.close()
    path = shared_directory(state_dir) / ADMIN_TOKEN_FILE
    write_atomically(path, (token + "\n").encode())
    log.info("admin token: %s %s", "created" if created else "read", secret)  # never the value
    return path


__all__ = ["AdminTokenError", "KubeConfigError", "take_shared_admin_token"]
