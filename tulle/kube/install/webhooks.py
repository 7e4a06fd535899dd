"""The admission webhooks the control plane serves: sidecar injection (mutating) and config
validation. Neither carries a caBundle: the control plane writes its CA's certificate there
once it runs (so re-running ``tulle install`` never fights it over that field)."""

from __future__ import annotations

from typing import Any

from tulle.api.kinds import KINDS
from tulle.kube.install.crds import plural
from tulle.kube.install.names import (
    CONTROL_PLANE,
    INJECT_ANNOTATION,
    INJECT_PATH,
    INJECTION_LABEL,
    VALIDATE_PATH,
    injector_name,
    labels,
    validator_name,
)
from tulle.kube.install.values import Values


def _client(values: Values, path: str) -> dict[str, Any]:
    return {
        "service": {
            "name": CONTROL_PLANE,
            "namespace": values.namespace,
            "path": path,
            "port": 443,
        }
    }


def injector(values: Values) -> dict[str, Any]:
    """Pods created in namespaces labelled ``tulle-injection=enabled`` get the sidecar; never in
    kube-system nor the control plane's own namespace; a pod labelled
    ``sidecar.tulle.dev/inject=false`` is skipped."""
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": injector_name(values.namespace), "labels": labels(values.namespace)},
        "webhooks": [
            {
                "name": "sidecar-injector.tulle.dev",
                "clientConfig": _client(values, INJECT_PATH),
                "rules": [
                    {
                        "operations": ["CREATE"],
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "resources": ["pods"],
                        "scope": "Namespaced",
                    }
                ],
                "namespaceSelector": {
                    "matchExpressions": [
                        {"key": INJECTION_LABEL, "operator": "In", "values": ["enabled"]},
                        {
                            "key": "kubernetes.io/metadata.name",
                            "operator": "NotIn",
                            "values": ["kube-system", values.namespace],
                        },
                    ]
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": INJECT_ANNOTATION, "operator": "NotIn", "values": ["false"]}
                    ]
                },
                "failurePolicy": values.webhook_failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": values.webhook_timeout_seconds,
                "reinvocationPolicy": "Never",
                "matchPolicy": "Equivalent",
            }
        ],
    }


def validator(values: Values) -> dict[str, Any]:
    """Creating or updating a config resource is refused with the findings ``tulle validate``
    prints."""
    groups: dict[str, tuple[set[str], list[str]]] = {}
    for model in KINDS:
        versions, resources = groups.setdefault(model.GROUP, (set(), []))
        versions.update(model.VERSIONS)
        resources.append(plural(model.KIND))
    rules = [
        {
            "operations": ["CREATE", "UPDATE"],
            "apiGroups": [group],
            "apiVersions": sorted(versions),
            "resources": resources,
            "scope": "Namespaced",
        }
        for group, (versions, resources) in sorted(groups.items())
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": validator_name(values.namespace), "labels": labels(values.namespace)},
        "webhooks": [
            {
                "name": "validation.tulle.dev",
                "clientConfig": _client(values, VALIDATE_PATH),
                "rules": rules,
                "failurePolicy": values.webhook_failure_policy,
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": values.webhook_timeout_seconds,
                "matchPolicy": "Equivalent",
            }
        ],
    }
