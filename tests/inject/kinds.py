"""Every kind ``tulle inject`` injects, as a user writes it, and a helper that checks a manifest
against Kubernetes' own schemas (kubernetes-validate, strict) for the oldest and newest versions
Tulle supports."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate

VERSIONS = ("1.29", "1.37")


def validate(obj: dict[str, Any]) -> None:
    """Raise kubernetes-validate's error for the first version ``obj`` is invalid in."""
    for version in VERSIONS:
        kubernetes_validate.validate(obj, version, strict=True)


def pod_spec() -> dict[str, Any]:
    """A pod spec with an HTTP readiness probe on a named port and a liveness probe on a
    number, a TCP startup probe, an init container of the user's and a volume."""
    return {
        "serviceAccountName": "web",
        "initContainers": [{"name": "migrate", "image": "web:1", "command": ["migrate"]}],
        "containers": [
            {
                "name": "web",
                "image": "web:1",
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "PORT", "value": "8080"}],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}},
                "livenessProbe": {
                    "httpGet": {
                        "path": "/live",
                        "port": 8080,
                        "httpHeaders": [{"name": "X-Probe", "value": "1"}],
                    },
                    "timeoutSeconds": 3,
                },
                "startupProbe": {"tcpSocket": {"port": 8080}},
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            },
            {"name": "logger", "image": "logger:1"},
        ],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }


def template(**annotations: str) -> dict[str, Any]:
    metadata: dict[str, Any] = {"labels": {"app": "web"}}
    if annotations:
        metadata["annotations"] = dict(annotations)
    return {"metadata": metadata, "spec": pod_spec()}


def selector() -> dict[str, Any]:
    return {"matchLabels": {"app": "web"}}


def with_restart(tpl: dict[str, Any], policy: str) -> dict[str, Any]:
    tpl = copy.deepcopy(tpl)
    tpl["spec"]["restartPolicy"] = policy
    return tpl


def objects(**annotations: str) -> dict[str, dict[str, Any]]:
    """One object of each kind, by kind, each with the pod template of :func:`template`."""
    tpl = template(**annotations)
    meta = {"name": "web", "namespace": "shop"}
    return {
        "Pod": {"apiVersion": "v1", "kind": "Pod", "metadata": {**meta, **tpl["metadata"]},
                "spec": tpl["spec"]},
        "Deployment": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
                       "spec": {"replicas": 2, "selector": selector(), "template": tpl}},
        "StatefulSet": {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": meta,
                        "spec": {"serviceName": "web", "selector": selector(), "template": tpl}},
        "DaemonSet": {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": meta,
                      "spec": {"selector": selector(), "template": tpl}},
        "ReplicaSet": {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": meta,
                       "spec": {"selector": selector(), "template": tpl}},
        "ReplicationController": {"apiVersion": "v1", "kind": "ReplicationController",
                                  "metadata": meta,
                                  "spec": {"selector": {"app": "web"}, "template": tpl}},
        "Job": {"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
                "spec": {"template": with_restart(tpl, "Never")}},
        "CronJob": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": meta,
                    "spec": {"schedule": "*/5 * * * *", "jobTemplate": {
                        "spec": {"template": with_restart(tpl, "OnFailure")}}}},
    }  # fmt: skip


PASSING_THROUGH = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 8080}]}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web"},
     "data": {"sidecar.istio.io/inject": "true"}},
    {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web"}},
]  # fmt: skip
"""Documents the injector leaves as they are."""
