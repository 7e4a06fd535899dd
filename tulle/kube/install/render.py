"""All of ``tulle install``'s manifests in the order they are applied: the namespace and the
CRDs first, then what refers to them, the webhooks last (so that a webhook never points at a
control plane that is not there yet)."""

from __future__ import annotations

from typing import Any

import yaml

from tulle.kube.install.controlplane import deployment, disruption_budget, mesh_config, service
from tulle.kube.install.crds import crds
from tulle.kube.install.names import BUILTIN_NAMESPACES, labels
from tulle.kube.install.rbac import rbac
from tulle.kube.install.values import Values
from tulle.kube.install.webhooks import injector, validator


def namespace(values: Values) -> dict[str, Any]:
    """The control plane's namespace (never injected: the webhook excludes it by name)."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": values.namespace, "labels": labels(values.namespace)},
    }


def render(values: Values) -> list[dict[str, Any]]:
    """The manifests for ``values``."""
    manifests = [] if values.namespace in BUILTIN_NAMESPACES else [namespace(values)]
    manifests += crds(
        istio=not values.skip_istio_crds, gateway_api=not values.skip_gateway_api_crds
    )
    manifests += rbac(values.namespace)
    manifests += [mesh_config(values), deployment(values), service(values)]
    if values.pod_disruption_budget and values.replicas > 1:
        manifests.append(disruption_budget(values))
    manifests += [injector(values), validator(values)]
    return manifests


def to_yaml(manifests: list[dict[str, Any]]) -> str:
    """Multi-document YAML, as ``kubectl apply -f -`` reads it."""
    return "".join(
        "---\n" + yaml.safe_dump(manifest, sort_keys=False, width=100) for manifest in manifests
    )
