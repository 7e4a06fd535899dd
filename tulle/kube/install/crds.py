"""The CustomResourceDefinitions of the config kinds Tulle reads: its own (``tulle.dev``),
Istio's (``networking.istio.io``, ``security.istio.io``) and the Gateway API's HTTPRoute and
GRPCRoute, with schemas generated from ``tulle.api``'s models
(:mod:`tulle.kube.install.schema`)."""

from __future__ import annotations

from typing import Any

from tulle.api.kinds import KINDS, Resource
from tulle.kube.install.names import labels
from tulle.kube.install.schema import structural_schema

ISTIO_GROUPS = ("networking.istio.io", "security.istio.io")
GATEWAY_GROUP = "gateway.networking.k8s.io"
TULLE_GROUP = "tulle.dev"

# The version each group stores, as Istio's and the Gateway API's own CRDs do (so that their
# CRDs can later replace these without a storage migration).
_STORAGE = {
    "networking.istio.io": "v1alpha3",
    "security.istio.io": "v1beta1",
    GATEWAY_GROUP: "v1",
    TULLE_GROUP: "v1alpha1",
}
_SHORT_NAMES = {
    "VirtualService": ["vs"],
    "DestinationRule": ["dr"],
    "ServiceEntry": ["se"],
    "PeerAuthentication": ["pa"],
    "AuthorizationPolicy": ["ap"],
}
_CATEGORIES = {
    "networking.istio.io": ["istio-io", "networking-istio-io"],
    "security.istio.io": ["istio-io", "security-istio-io"],
    GATEWAY_GROUP: ["gateway-api"],
    TULLE_GROUP: ["tulle"],
}


def plural(kind: str) -> str:
    """The resource name of ``kind``: ``virtualservices``, ``authorizationpolicies``,
    ``meshes``."""
    lowered = kind.lower()
    if lowered.endswith("y"):
        return lowered[:-1] + "ies"
    if lowered.endswith(("sh", "s", "x")):
        return lowered + "es"
    return lowered + "s"


def crd(model: type[Resource]) -> dict[str, Any]:
    """The CustomResourceDefinition of ``model``'s kind: every version it reads served, one
    stored, a status subresource (the control plane reports findings there)."""
    spec_field = model.model_fields["spec"]
    spec_model = spec_field.annotation
    assert isinstance(spec_model, type)
    schema = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural_schema(spec_model),
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    if spec_field.is_required():
        schema["required"] = ["spec"]
    name = plural(model.KIND)
    storage = _STORAGE[model.GROUP]
    names: dict[str, Any] = {
        "kind": model.KIND,
        "listKind": f"{model.KIND}List",
        "plural": name,
        "singular": model.KIND.lower(),
        "categories": _CATEGORIES[model.GROUP],
    }
    if model.KIND in _SHORT_NAMES:
        names["shortNames"] = _SHORT_NAMES[model.KIND]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{name}.{model.GROUP}", "labels": labels(None)},
        "spec": {
            "group": model.GROUP,
            "names": names,
            "scope": "Namespaced",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == storage,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {"status": {}},
                }
                for version in sorted(model.VERSIONS, key=lambda v: v != storage)
            ],
        },
    }


def config_models(*, istio: bool = True, gateway_api: bool = True) -> list[type[Resource]]:
    """The config kinds, less Istio's or the Gateway API's when their CRDs are skipped."""
    chosen = []
    for model in KINDS:
        if model.GROUP in ISTIO_GROUPS and not istio:
            continue
        if model.GROUP == GATEWAY_GROUP and not gateway_api:
            continue
        chosen.append(model)
    return chosen


def crds(*, istio: bool = True, gateway_api: bool = True) -> list[dict[str, Any]]:
    """The CRDs to install."""
    return [crd(model) for model in config_models(istio=istio, gateway_api=gateway_api)]
