"""The control plane's ServiceAccount and least-privilege RBAC: each rule with the reason it
exists (docs/kubernetes.md prints the same table)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tulle.api.kinds import KINDS
from tulle.kube.install.crds import plural
from tulle.kube.install.names import (
    ADMIN_TOKEN_SECRET,
    CA_SECRET,
    CONTROL_PLANE,
    LEADER_LEASE,
    ROOT_CERT,
    cluster_role_name,
    injector_name,
    labels,
    validator_name,
)

READ = ["get", "list", "watch"]


@dataclass(frozen=True)
class Rule:
    """One PolicyRule and why the control plane needs it."""

    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    reason: str
    resource_names: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The PolicyRule as Kubernetes writes it."""
        rule: dict[str, Any] = {
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
        }
        if self.resource_names:
            rule["resourceNames"] = list(self.resource_names)
        rule["verbs"] = list(self.verbs)
        return rule


def _config_groups() -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for model in KINDS:
        groups.setdefault(model.GROUP, []).append(plural(model.KIND))
    return groups


def cluster_rules(namespace: str) -> list[Rule]:
    """The ClusterRole's rules: what the control plane reads and writes cluster-wide."""
    rules = [
        Rule(
            ("",),
            ("services", "pods", "namespaces", "nodes"),
            tuple(READ),
            "the registry: Services (ports, protocols), Pods (labels for subsets, service "
            "account for identity), Namespaces (injection label), Nodes (zone)",
        ),
        Rule(
            ("discovery.k8s.io",),
            ("endpointslices",),
            tuple(READ),
            "the registry: endpoints (ready, serving, terminating, zone)",
        ),
    ]
    for group, resources in sorted(_config_groups().items()):
        rules.append(
            Rule((group,), tuple(resources), tuple(READ), f"config: the {group} kinds Tulle reads")
        )
        rules.append(
            Rule(
                (group,),
                tuple(f"{resource}/status" for resource in resources),
                ("get", "update", "patch"),
                "config: a resource's findings (and the last good version in force) in .status",
            )
        )
    rules += [
        Rule(
            ("authentication.k8s.io",),
            ("tokenreviews",),
            ("create",),
            "identity: check a workload's projected service-account token (audience tulle-ca)",
        ),
        Rule(
            ("", "events.k8s.io"),
            ("events",),
            ("create", "patch"),
            "config: an Event on a resource that fails validation",
        ),
        Rule(
            ("",),
            ("configmaps",),
            ("get", "list", "watch", "create"),
            f"identity: publish the root certificate ({ROOT_CERT}) in every namespace "
            "(create cannot be limited by name)",
        ),
        Rule(
            ("",),
            ("configmaps",),
            ("update", "patch"),
            "identity: keep the root certificate current (after a CA rotation)",
            (ROOT_CERT,),
        ),
        Rule(
            ("admissionregistration.k8s.io",),
            ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"),
            tuple(READ),
            "webhooks: read their configurations",
        ),
        Rule(
            ("admissionregistration.k8s.io",),
            ("mutatingwebhookconfigurations",),
            ("update", "patch"),
            "webhooks: keep the injector's caBundle current (only its own configuration)",
            (injector_name(namespace),),
        ),
        Rule(
            ("admissionregistration.k8s.io",),
            ("validatingwebhookconfigurations",),
            ("update", "patch"),
            "webhooks: keep the validator's caBundle current (only its own configuration)",
            (validator_name(namespace),),
        ),
        Rule(
            ("apiextensions.k8s.io",),
            ("customresourcedefinitions",),
            tuple(READ),
            "config: which config kinds the cluster serves (tulle check, watches)",
        ),
    ]
    return rules


def namespace_rules() -> list[Rule]:
    """The Role's rules: what the control plane writes only in its own namespace."""
    return [
        Rule(
            ("coordination.k8s.io",),
            ("leases",),
            ("get", "list", "watch", "create"),
            "replicas: elect one leader (create cannot be limited by name)",
        ),
        Rule(
            ("coordination.k8s.io",),
            ("leases",),
            ("update", "patch"),
            "replicas: renew the leader's lease",
            (LEADER_LEASE,),
        ),
        Rule(
            ("",),
            ("secrets",),
            ("create",),
            "identity: store the CA's key, and the API's admin token, the first time (create "
            "cannot be limited by name)",
        ),
        Rule(
            ("",),
            ("secrets",),
            ("get", "watch", "update", "patch"),
            "identity: read and rotate the CA's key, and no other Secret",
            (CA_SECRET,),
        ),
        Rule(
            ("",),
            ("secrets",),
            ("get",),
            "the HTTP API: read the admin token every replica shares (never changed by it)",
            (ADMIN_TOKEN_SECRET,),
        ),
    ]


def rbac(namespace: str) -> list[dict[str, Any]]:
    """The ServiceAccount, ClusterRole, ClusterRoleBinding, Role and RoleBinding."""
    meta = {"labels": labels(namespace)}
    cluster_name = cluster_role_name(namespace)
    subject = [{"kind": "ServiceAccount", "name": CONTROL_PLANE, "namespace": namespace}]
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": CONTROL_PLANE, "namespace": namespace, **meta},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": cluster_name, **meta},
            "rules": [rule.to_dict() for rule in cluster_rules(namespace)],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name, **meta},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": cluster_name,
            },
            "subjects": subject,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": CONTROL_PLANE, "namespace": namespace, **meta},
            "rules": [rule.to_dict() for rule in namespace_rules()],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": CONTROL_PLANE, "namespace": namespace, **meta},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": CONTROL_PLANE,
            },
            "subjects": subject,
        },
    ]
