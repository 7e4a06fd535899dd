"""Injecting one pod (its metadata and spec, a Pod's or a template's): the traffic-redirect init
container, the sidecar (native or not), the identity and root-certificate volumes, the rewritten
probes and the annotations; or, in library mode, only the environment and files ``tulle.client``
reads. Works on the dicts it is given (the caller copies)."""

from __future__ import annotations

import json
from typing import Any

from tulle.inject.annotations import PodOptions
from tulle.inject.errors import FieldPath, InjectError
from tulle.inject.probes import PROBERS_VARIABLE, probers_json, rewrite_probes
from tulle.inject.settings import (
    INIT_CONTAINER,
    PROXY_CONTAINER,
    ROOT_CERT_DIRECTORY,
    ROOT_CERT_FILE,
    ROOT_CERT_VOLUME,
    RUN_DIRECTORY,
    RUN_VOLUME,
    STATUS_ANNOTATION,
    TOKEN_DIRECTORY,
    TOKEN_FILE,
    TOKEN_VOLUME,
    MeshSettings,
)

TLS_MODE_LABEL = "security.istio.io/tlsMode"
ADMIN_TOKEN_FILE = f"{RUN_DIRECTORY}/proxy/admin-token"
_FACTS = (  # the pod facts, from the downward API
    ("POD_NAME", "metadata.name"),
    ("POD_NAMESPACE", "metadata.namespace"),
    ("POD_IP", "status.podIP"),
    ("SERVICE_ACCOUNT", "spec.serviceAccountName"),
    ("NODE_NAME", "spec.nodeName"),
    ("HOST_IP", "status.hostIP"),
)


def is_injected(metadata: dict[str, Any], spec: dict[str, Any]) -> bool:
    """Whether the pod already carries an injection (the status annotation or a container of
    the injector's name): injecting it again changes nothing."""
    if STATUS_ANNOTATION in (metadata.get("annotations") or {}):
        return True
    names = {
        container.get("name")
        for key in ("containers", "initContainers")
        for container in spec.get(key) or ()
        if isinstance(container, dict)
    }
    return bool(names & {PROXY_CONTAINER, INIT_CONTAINER})


def check_spec(spec: Any, path: FieldPath) -> dict[str, Any]:
    """``spec``, checked; InjectError for a spec the injector cannot work on."""
    if not isinstance(spec, dict):
        raise InjectError(path, "missing or not a mapping (a pod spec)")
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InjectError((*path, "containers"), "a pod needs at least one container")
    for key in ("containers", "initContainers", "volumes"):
        items = spec.get(key)
        if items is None:
            continue
        if not isinstance(items, list):
            raise InjectError((*path, key), "not a list")
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise InjectError((*path, key, index), "not a mapping")
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise InjectError((*path, key, index, "name"), "missing")
    return spec


def inject_pod(
    metadata: dict[str, Any],
    spec: dict[str, Any],
    path: FieldPath,
    settings: MeshSettings,
    options: PodOptions,
) -> list[str]:
    """Inject the pod in place (``path``: its spec's); the warnings."""
    taken = {volume["name"] for volume in spec.get("volumes") or ()}
    for name in sorted({TOKEN_VOLUME, ROOT_CERT_VOLUME, RUN_VOLUME} & taken):
        raise InjectError((*path, "volumes"), f"a volume is already named {name!r}")
    warnings: list[str] = []
    annotations = metadata["annotations"] = metadata.get("annotations") or {}
    apps = spec["containers"]
    volumes = spec["volumes"] = spec.get("volumes") or []
    volumes += [_token_volume(settings), _root_cert_volume(settings)]
    if options.mode == "library":
        for container in apps:
            _add_env(container, _library_env(settings, options))
            _add_mounts(container, _identity_mounts())
        annotations[STATUS_ANNOTATION] = _status("library", False, [], [], volumes[-2:])
        return warnings
    warnings += _uid_warnings(spec, apps, settings)
    probers: dict[str, dict[str, Any]] = {}
    if options.rewrite_probes:
        probers = rewrite_probes(apps, (*path, "containers"), settings.health_port)
    volumes.append({"name": RUN_VOLUME, "emptyDir": {"medium": "Memory"}})
    proxy = _proxy_container(settings, options, probers)
    init = _init_container(settings, options)
    user_init = spec.get("initContainers") or []
    if options.native_sidecar:
        spec["initContainers"] = [init, proxy, *user_init]
    else:
        spec["initContainers"] = [init, *user_init]
        spec["containers"] = [proxy, *apps]
    annotations.setdefault("kubectl.kubernetes.io/default-container", apps[0]["name"])
    annotations.setdefault("kubectl.kubernetes.io/default-logs-container", apps[0]["name"])
    if "prometheus.io/scrape" not in annotations:
        annotations["prometheus.io/scrape"] = "true"
        annotations["prometheus.io/port"] = str(settings.stats_port)
        annotations["prometheus.io/path"] = "/stats/prometheus"
    labels = metadata["labels"] = metadata.get("labels") or {}
    labels.setdefault(TLS_MODE_LABEL, "istio")
    initial = [INIT_CONTAINER, PROXY_CONTAINER] if options.native_sidecar else [INIT_CONTAINER]
    annotations[STATUS_ANNOTATION] = _status(
        "sidecar",
        options.native_sidecar,
        initial,
        [] if options.native_sidecar else [PROXY_CONTAINER],
        volumes[-3:],
    )
    return warnings


def _status(
    mode: str, native: bool, init: list[str], containers: list[str], volumes: list[Any]
) -> str:
    """What the injector added (as Istio's sidecar.istio.io/status): marks the pod injected."""
    return json.dumps(
        {
            "mode": mode,
            "native": native,
            "initContainers": init,
            "containers": containers,
            "volumes": [volume["name"] for volume in volumes],
        },
        separators=(",", ":"),
    )


def _node_id(mode: str, settings: MeshSettings) -> str:
    return (
        f"{mode}~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc."
        f"{settings.cluster_domain}"
    )


def _facts() -> list[dict[str, Any]]:
    return [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
            for name, path in _FACTS]  # fmt: skip


def _library_env(settings: MeshSettings, options: PodOptions) -> list[dict[str, Any]]:
    return [
        *_facts(),
        {"name": "TULLE_XDS_ADDRESS", "value": options.xds_address},
        {"name": "TULLE_NODE_ID", "value": _node_id("library", settings)},
        {"name": "TULLE_XDS_ROOT_CERT", "value": f"{ROOT_CERT_DIRECTORY}/{ROOT_CERT_FILE}"},
        {"name": "TULLE_TOKEN_FILE", "value": f"{TOKEN_DIRECTORY}/{TOKEN_FILE}"},
    ]


def _add_env(container: dict[str, Any], variables: list[dict[str, Any]]) -> None:
    """Append the variables the container does not set itself (its own value wins)."""
    env = container["env"] = container.get("env") or []
    present = {item.get("name") for item in env if isinstance(item, dict)}
    env += [variable for variable in variables if variable["name"] not in present]


def _identity_mounts() -> list[dict[str, Any]]:
    return [
        {"name": TOKEN_VOLUME, "mountPath": TOKEN_DIRECTORY, "readOnly": True},
        {"name": ROOT_CERT_VOLUME, "mountPath": ROOT_CERT_DIRECTORY, "readOnly": True},
    ]


def _add_mounts(container: dict[str, Any], mounts: list[dict[str, Any]]) -> None:
    existing = container["volumeMounts"] = container.get("volumeMounts") or []
    paths = {item.get("mountPath") for item in existing if isinstance(item, dict)}
    existing += [mount for mount in mounts if mount["mountPath"] not in paths]


def _token_volume(settings: MeshSettings) -> dict[str, Any]:
    token = {
        "audience": settings.token_audience,
        "expirationSeconds": settings.token_expiration_seconds,
        "path": TOKEN_FILE,
    }
    return {"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": token}]}}


def _root_cert_volume(settings: MeshSettings) -> dict[str, Any]:
    return {"name": ROOT_CERT_VOLUME, "configMap": {"name": settings.root_cert_config_map}}


def _resources(options: PodOptions) -> dict[str, Any]:
    requests = {"cpu": options.cpu_request, "memory": options.memory_request}
    limits = {"cpu": options.cpu_limit, "memory": options.memory_limit}
    resources = {
        "requests": {key: value for key, value in requests.items() if value},
        "limits": {key: value for key, value in limits.items() if value},
    }
    return {key: value for key, value in resources.items() if value}


def _ready_probe(settings: MeshSettings, **timing: int) -> dict[str, Any]:
    get = {"path": "/ready", "port": settings.health_port, "scheme": "HTTP"}
    return {"httpGet": get, **timing}


def _proxy_container(
    settings: MeshSettings, options: PodOptions, probers: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    args = [
        "proxy",
        "--xds", options.xds_address,
        "--node-id", _node_id("sidecar", settings),
        "--xds-root-cert", f"{ROOT_CERT_DIRECTORY}/{ROOT_CERT_FILE}",
        "--token-file", f"{TOKEN_DIRECTORY}/{TOKEN_FILE}",
        "--admin-port", str(settings.admin_port),
        "--admin-token-file", ADMIN_TOKEN_FILE,
        "--stats-port", str(settings.stats_port), "--stats-host", "0.0.0.0",
        "--health-port", str(settings.health_port), "--health-host", "0.0.0.0",
        "--outbound-port", str(settings.outbound_port),
        "--inbound-port", str(settings.inbound_port),
        "--drain-seconds", f"{settings.drain_seconds:g}",
        "--log-level", options.log_level,
    ]  # fmt: skip
    env = _facts()
    if probers:
        env.append({"name": PROBERS_VARIABLE, "value": probers_json(probers)})
    container: dict[str, Any] = {
        "name": PROXY_CONTAINER,
        "image": options.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tulle"],
        "args": args,
        "env": env,
        "ports": [
            {"name": "tulle-stats", "containerPort": settings.stats_port, "protocol": "TCP"},
            {"name": "tulle-health", "containerPort": settings.health_port, "protocol": "TCP"},
        ],
        "readinessProbe": _ready_probe(
            settings, periodSeconds=15, timeoutSeconds=3, failureThreshold=4
        ),
        "resources": _resources(options),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": True,
            "runAsGroup": settings.proxy_uid,
            "runAsNonRoot": True,
            "runAsUser": settings.proxy_uid,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            *_identity_mounts(),
            {"name": RUN_VOLUME, "mountPath": RUN_DIRECTORY},
        ],
    }
    if options.native_sidecar:
        # The kubelet starts the next container only once this probe passes, and stops the
        # sidecar after the app's containers: the preStop hook drains it first.
        container["restartPolicy"] = "Always"
        container["startupProbe"] = _ready_probe(
            settings,
            periodSeconds=1,
            timeoutSeconds=3,
            failureThreshold=settings.ready_timeout_seconds,
        )
        drain = ["tulle", "proxy-drain", "--admin-port", str(settings.admin_port),
                 "--admin-token-file", ADMIN_TOKEN_FILE]  # fmt: skip
        container["lifecycle"] = {"preStop": {"exec": {"command": drain}}}
    else:
        # The kubelet starts the next container only once this hook returns.
        wait = ["tulle", "proxy-wait", "--health-port", str(settings.health_port),
                "--timeout", str(settings.ready_timeout_seconds)]  # fmt: skip
        container["lifecycle"] = {"postStart": {"exec": {"command": wait}}}
    return container


def _init_container(settings: MeshSettings, options: PodOptions) -> dict[str, Any]:
    args = [
        "iptables",
        "--outbound-port", str(settings.outbound_port),
        "--inbound-port", str(settings.inbound_port),
        "--proxy-uid", str(settings.proxy_uid),
        "--mark", "",  # the sidecar has no CAP_NET_ADMIN for SO_MARK: excluded by uid
    ]  # fmt: skip
    inbound = (settings.admin_port, settings.stats_port, settings.health_port,
               *options.exclude_inbound_ports)  # fmt: skip
    for port in dict.fromkeys(inbound):
        args += ["--exclude-inbound-port", str(port)]
    for port in options.exclude_outbound_ports:
        args += ["--exclude-outbound-port", str(port)]
    for cidr in options.exclude_outbound_cidrs:
        args += ["--exclude-outbound-cidr", cidr]
    return {
        "name": INIT_CONTAINER,
        "image": options.image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": ["tulle"],
        "args": args,
        "resources": {"requests": {"cpu": "10m", "memory": "40Mi"}, "limits": {"memory": "128Mi"}},
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]},
            "privileged": False,
            "readOnlyRootFilesystem": False,  # iptables takes its lock under /run
            "runAsGroup": 0,
            "runAsNonRoot": False,
            "runAsUser": 0,
        },
    }


def _uid_warnings(
    spec: dict[str, Any], apps: list[dict[str, Any]], settings: MeshSettings
) -> list[str]:
    """A warning per app container that runs as the sidecar's user: its traffic is not
    redirected (iptables leaves that uid alone)."""
    pod_uid = (spec.get("securityContext") or {}).get("runAsUser")
    warnings = []
    for container in apps:
        uid = (container.get("securityContext") or {}).get("runAsUser", pod_uid)
        if uid == settings.proxy_uid:
            warnings.append(
                f"container {container['name']} runs as uid {uid}, the sidecar's: its traffic "
                "bypasses the sidecar"
            )
    return warnings
