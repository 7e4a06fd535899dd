"""Workload identity with ``--registry kubernetes``: the projected service-account token.

An ``Authenticator`` (and the CA's ``ReplicaAuthenticator``) in front of two kinds of credential:
a JWT-shaped one (three dot-separated parts) is a Kubernetes service-account token, checked by
the API server (:class:`tulle.kube.tokenreview.TokenReviewer`), and proves
``ns/<namespace>/sa/<serviceAccount>`` for the replica ``<pod>.<namespace>`` it is bound to;
anything else is a bootstrap token, checked as in local mode (``tulle proxy`` started by hand
beside the cluster still works). A bootstrap token never has a dot (``secrets.token_urlsafe``),
so neither kind is ever tried as the other, and no TokenReview is spent on a bootstrap token."""

from __future__ import annotations

from pathlib import Path

from tulle.kube.tokenreview import TokenRefused, TokenReviewer
from tulle.security.grpc_token import unwrap
from tulle.security.tokens import BootstrapTokens, Unauthenticated, WorkloadIdentity


class KubernetesWorkloads:
    """Bootstrap tokens, and service-account tokens checked with TokenReview."""

    blocking = True
    """Checking a credential may wait on the API server: callers on the event loop run it in a
    thread (see :class:`tulle.control.node_auth.NodeAuthorizer`)."""

    def __init__(self, bootstrap: BootstrapTokens, reviewer: TokenReviewer) -> None:
        self.bootstrap = bootstrap
        self.reviewer = reviewer

    def authenticate(self, credential: str) -> WorkloadIdentity:
        """The identity ``credential`` proves; ``Unauthenticated`` with the reason otherwise."""
        return self.authenticate_replica(credential)[1]

    def authenticate_replica(self, credential: str) -> tuple[str, WorkloadIdentity]:
        """The replica (``<pod>.<namespace>``; "" for a service-account token bound to no pod)
        and the identity ``credential`` proves."""
        token = unwrap(credential.strip())
        if token.count(".") != 2:
            return self.bootstrap.authenticate_replica(token)
        try:
            account = self.reviewer.review(token)
        except TokenRefused as error:
            raise Unauthenticated(f"service-account token refused: {error}") from None
        try:
            identity = WorkloadIdentity(account.namespace, account.service_account)
        except ValueError as error:
            raise Unauthenticated(f"service-account token: {error}") from None
        replica = f"{account.pod}.{account.namespace}" if account.pod else ""
        return replica, identity

    def close(self) -> None:
        """Close the API server connections."""
        self.reviewer.close()


def connect(
    bootstrap: BootstrapTokens, kubeconfig: Path | None, context: str | None
) -> KubernetesWorkloads:
    """Workload credentials checked against the API server of ``kubeconfig``/``context``."""
    return KubernetesWorkloads(bootstrap, TokenReviewer.connect(kubeconfig, context))
