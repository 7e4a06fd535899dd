"""The names and ports the manifests, the control plane and the injector agree on."""

from __future__ import annotations

from tulle import __version__

CONTROL_PLANE = "tulle-controlplane"
"""The Deployment, its Service, ServiceAccount, Role and PodDisruptionBudget."""
MESH_CONFIG = "tulle-mesh-config"
"""The ConfigMap holding the Mesh resource (key ``mesh.yaml``)."""
CA_SECRET = "tulle-ca-secret"
"""The Secret in the control plane's namespace that holds the CA's key (written by the leader)."""
ADMIN_TOKEN_SECRET = "tulle-admin-token"
"""The Secret in the control plane's namespace holding the admin token of its HTTP API (key
``token``), shared by every replica: the control plane creates it when missing, and the CLI
reads it with the user's Kubernetes credentials (``tulle proxy-status --kube``)."""
ROOT_CERT = "tulle-ca-root-cert"
"""The ConfigMap with the root certificate that the control plane publishes in every namespace."""
LEADER_LEASE = "tulle-controlplane-leader"
"""The Lease the replicas elect their leader with."""
INJECTION_LABEL = "tulle-injection"
"""A namespace labelled ``tulle-injection=enabled`` gets sidecars injected."""
INJECT_ANNOTATION = "sidecar.tulle.dev/inject"
"""A pod annotated (or labelled) ``sidecar.tulle.dev/inject: "false"`` is left alone."""

XDS_PORT = 15012
"""ADS and the CA's signing service over TLS."""
HTTP_PORT = 15014
"""The HTTP API (``/healthz`` unauthenticated), metrics and dashboard."""
WEBHOOK_PORT = 15017
"""The injection and validation webhooks (HTTPS)."""

INJECT_PATH = "/inject"
VALIDATE_PATH = "/validate"

BUILTIN_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
"""Namespaces Kubernetes makes: an install into one neither labels nor ever deletes it."""

MANAGED_BY = "app.kubernetes.io/managed-by"
INSTANCE = "tulle.dev/install-namespace"


def injector_name(namespace: str) -> str:
    """The MutatingWebhookConfiguration of the control plane installed in ``namespace``."""
    return f"tulle-sidecar-injector-{namespace}"


def validator_name(namespace: str) -> str:
    """The ValidatingWebhookConfiguration of the control plane installed in ``namespace``."""
    return f"tulle-validator-{namespace}"


def cluster_role_name(namespace: str) -> str:
    """The ClusterRole (and its binding) of the control plane installed in ``namespace``."""
    return f"tulle-controlplane-{namespace}"


def labels(namespace: str | None) -> dict[str, str]:
    """The labels of every object ``tulle install`` writes; ``None`` for the CRDs, which every
    install in the cluster shares."""
    common = {
        MANAGED_BY: "tulle",
        "app.kubernetes.io/part-of": "tulle",
        "app.kubernetes.io/version": __version__,
    }
    if namespace is not None:
        common[INSTANCE] = namespace
    return common
