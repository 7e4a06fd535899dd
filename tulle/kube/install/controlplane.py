"""The control plane's workload: its Deployment, Service, PodDisruptionBudget and the mesh
config it reads (a ConfigMap holding the Mesh resource)."""

from __future__ import annotations

from typing import Any

import yaml

from tulle.api.kinds import Mesh
from tulle.kube.install.names import (
    CONTROL_PLANE,
    HTTP_PORT,
    MESH_CONFIG,
    WEBHOOK_PORT,
    XDS_PORT,
    labels,
)
from tulle.kube.install.values import InstallError, Values

SELECTOR = {"app": CONTROL_PLANE}
USER_ID = 1337  # the image's non-root user (Containerfile)
STATE_DIR = "/var/lib/tulle"
MESH_DIR = "/etc/tulle/mesh"


def mesh_resource(values: Values) -> dict[str, Any]:
    """The Mesh resource of ``values``, checked by Tulle's own model."""
    document = {
        "apiVersion": "tulle.dev/v1alpha1",
        "kind": "Mesh",
        "metadata": {"name": "mesh", "namespace": values.namespace},
        "spec": {
            "trustDomain": values.trust_domain,
            "mtls": {"mode": values.mtls_mode},
            "outboundTrafficPolicy": {"mode": values.outbound_traffic_policy},
            "accessLog": {"enabled": values.access_log},
            "tracing": {"sampling": values.tracing_sampling},
        },
    }
    try:
        Mesh.model_validate(document)
    except ValueError as error:
        raise InstallError(f"meshConfig: {error}") from None
    return document


def mesh_config(values: Values) -> dict[str, Any]:
    """The ConfigMap ``tulle-mesh-config``: ``mesh.yaml`` is read by the control plane (``-f``),
    and edits to it are picked up as any config file's are."""
    text = yaml.safe_dump(mesh_resource(values), sort_keys=False)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": MESH_CONFIG,
            "namespace": values.namespace,
            "labels": labels(values.namespace),
        },
        "data": {"mesh.yaml": text},
    }


def _resources(values: Values) -> dict[str, Any]:
    limits = {}
    if values.cpu_limit:
        limits["cpu"] = values.cpu_limit
    if values.memory_limit:
        limits["memory"] = values.memory_limit
    resources: dict[str, Any] = {
        "requests": {"cpu": values.cpu_request, "memory": values.memory_request}
    }
    if limits:
        resources["limits"] = limits
    return resources


def _probe(period: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": "/healthz", "port": "http-api"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": failures,
    }


def _container(values: Values) -> dict[str, Any]:
    args = [
        "controlplane",
        "--registry",
        "kubernetes",
        "--host",
        "0.0.0.0",
        "--secure-xds-port",
        str(XDS_PORT),
        "--http-port",
        str(HTTP_PORT),
        "--webhook-port",
        str(WEBHOOK_PORT),
        "--webhook-address",
        "0.0.0.0",
        "--state-dir",
        STATE_DIR,
        "--log-level",
        values.log_level,
        "-f",
        MESH_DIR,
        # What the injection webhook puts in pods: this image, this control plane.
        "--inject-set",
        f"image={values.image_ref}",
        "--inject-set",
        f"image_pull_policy={values.image_pull_policy}",
        "--inject-set",
        f"xds_address={CONTROL_PLANE}.{values.namespace}.svc:{XDS_PORT}",
    ]
    if values.prometheus:  # the dashboard's traffic figures
        args += ["--prometheus", values.prometheus]
    field = {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
    return {
        "name": "controlplane",
        "image": values.image_ref,
        "imagePullPolicy": values.image_pull_policy,
        "command": ["tulle"],
        "args": args,
        "env": [
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE", "valueFrom": field},
        ],
        "ports": [
            {"name": "grpc-xds", "containerPort": XDS_PORT, "protocol": "TCP"},
            {"name": "http-api", "containerPort": HTTP_PORT, "protocol": "TCP"},
            {"name": "https-webhook", "containerPort": WEBHOOK_PORT, "protocol": "TCP"},
        ],
        "startupProbe": _probe(2, 60),
        "readinessProbe": _probe(5, 3),
        "livenessProbe": _probe(10, 3),
        "resources": _resources(values),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "mesh-config", "mountPath": MESH_DIR, "readOnly": True},
            {"name": "state", "mountPath": STATE_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def deployment(values: Values) -> dict[str, Any]:
    """The control plane's Deployment: ``replicas`` pods, spread over nodes when more than one,
    rolled one at a time with none unavailable."""
    pod_labels = {**SELECTOR, "app.kubernetes.io/name": CONTROL_PLANE, **labels(values.namespace)}
    spec: dict[str, Any] = {
        "serviceAccountName": CONTROL_PLANE,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "runAsGroup": USER_ID,
            "fsGroup": USER_ID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(values)],
        "volumes": [
            {"name": "mesh-config", "configMap": {"name": MESH_CONFIG}},
            {"name": "state", "emptyDir": {}},
            {"name": "tmp", "emptyDir": {}},
        ],
    }
    if values.replicas > 1:
        spec["affinity"] = {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "labelSelector": {"matchLabels": SELECTOR},
                            "topologyKey": "kubernetes.io/hostname",
                        },
                    }
                ]
            }
        }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": CONTROL_PLANE,
            "namespace": values.namespace,
            "labels": {**pod_labels},
        },
        "spec": {
            "replicas": values.replicas,
            "selector": {"matchLabels": SELECTOR},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            },
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    }


def service(values: Values) -> dict[str, Any]:
    """The Service: xDS over TLS for the sidecars, the HTTP API, the webhooks on 443."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": CONTROL_PLANE,
            "namespace": values.namespace,
            "labels": labels(values.namespace),
        },
        "spec": {
            "type": "ClusterIP",
            "selector": SELECTOR,
            "ports": [
                {
                    "name": "grpc-xds",
                    "port": XDS_PORT,
                    "targetPort": "grpc-xds",
                    "protocol": "TCP",
                },
                {
                    "name": "http-api",
                    "port": HTTP_PORT,
                    "targetPort": "http-api",
                    "protocol": "TCP",
                },
                {
                    "name": "https-webhook",
                    "port": 443,
                    "targetPort": "https-webhook",
                    "protocol": "TCP",
                },
            ],
        },
    }


def disruption_budget(values: Values) -> dict[str, Any]:
    """At least one replica stays up through a node drain."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {
            "name": CONTROL_PLANE,
            "namespace": values.namespace,
            "labels": labels(values.namespace),
        },
        "spec": {"minAvailable": 1, "selector": {"matchLabels": SELECTOR}},
    }
