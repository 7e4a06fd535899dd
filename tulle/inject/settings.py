"""The mesh settings an injection needs: the sidecar's image, where the control plane is, the
sidecar's ports and user, and the identity and root-certificate volumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

# Where the injected files live in a pod (as Istio's /var/run/secrets/tokens/istio-token and
# /var/run/secrets/istio/root-cert.pem).
TOKEN_DIRECTORY = "/var/run/secrets/tulle/tokens"
TOKEN_FILE = "tulle-token"
ROOT_CERT_DIRECTORY = "/var/run/secrets/tulle/ca"
ROOT_CERT_FILE = "root-cert.pem"
RUN_DIRECTORY = "/var/run/tulle"  # the sidecar's writable directory (its admin token)

PROXY_CONTAINER = "tulle-proxy"
INIT_CONTAINER = "tulle-init"
TOKEN_VOLUME = "tulle-token"
ROOT_CERT_VOLUME = "tulle-ca-root-cert"
RUN_VOLUME = "tulle-run"
STATUS_ANNOTATION = "sidecar.tulle.dev/status"


class SettingsError(ValueError):
    """A setting that cannot work; the message names it."""


@dataclass(frozen=True)
class MeshSettings:
    """What every injection shares (``tulle inject --set NAME=VALUE`` names these fields)."""

    image: str = "tulle:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    xds_address: str = "tulle-controlplane.tulle-system.svc:15012"  # the secure xDS port
    cluster_domain: str = "cluster.local"  # the node id's <namespace>.svc.<domain>
    native_sidecar: bool = True  # Kubernetes 1.29+: an init container, restartPolicy Always
    proxy_uid: int = 1337  # the sidecar's user: its own traffic is not redirected
    admin_port: int = 15000
    outbound_port: int = 15001
    inbound_port: int = 15006
    stats_port: int = 15020  # GET /ready, /stats/prometheus (Prometheus scrapes it)
    health_port: int = 15021  # GET /ready, /app-health/<container>/<probe> (the kubelet)
    token_audience: str = "tulle-ca"
    token_expiration_seconds: int = 43200
    root_cert_config_map: str = "tulle-ca-root-cert"
    drain_seconds: float = 5.0
    log_level: str = "warning"
    cpu_request: str = "100m"
    memory_request: str = "128Mi"
    cpu_limit: str = ""  # empty: no limit
    memory_limit: str = "1Gi"
    ready_timeout_seconds: int = 600  # how long the app waits for the sidecar to be ready

    def check(self) -> None:
        """Raise SettingsError naming the first setting that cannot work."""
        ports = {
            name: getattr(self, name)
            for name in ("admin_port", "outbound_port", "inbound_port", "stats_port",
                         "health_port")
        }  # fmt: skip
        for name, port in ports.items():
            if not 1 <= port <= 65535:
                raise SettingsError(f"{name}: {port} is not a port (1-65535)")
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise SettingsError(f"{name}: {port} is also {seen[port]}")
            seen[port] = name
        if not self.image:
            raise SettingsError("image: empty")
        host, _, port_text = self.xds_address.rpartition(":")
        if not host or not port_text.isdigit():
            raise SettingsError(f"xds_address: {self.xds_address!r} is not HOST:PORT")
        if self.image_pull_policy not in ("Always", "IfNotPresent", "Never"):
            raise SettingsError(
                f"image_pull_policy: {self.image_pull_policy!r} is not Always, IfNotPresent "
                "or Never"
            )
        if not 0 <= self.proxy_uid < 2**31:
            raise SettingsError(f"proxy_uid: {self.proxy_uid} is not a uid")
        if self.proxy_uid == 0:
            raise SettingsError("proxy_uid: 0 is root; the sidecar runs as a non-root user")
        if self.token_expiration_seconds < 600:
            raise SettingsError(
                f"token_expiration_seconds: {self.token_expiration_seconds} is below "
                "Kubernetes' minimum of 600"
            )
        if self.log_level not in ("debug", "info", "warning", "error"):
            raise SettingsError(
                f"log_level: {self.log_level!r} is not debug, info, warning or error"
            )

    def replace(self, assignments: dict[str, str]) -> MeshSettings:
        """These settings with ``NAME=VALUE`` texts applied, converted to each field's type;
        SettingsError names an unknown field or a value of the wrong type."""
        fields = {field.name: field for field in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for name, text in assignments.items():
            key = name.replace("-", "_")
            if key not in fields:
                raise SettingsError(f"{name}: no such setting (one of {', '.join(sorted(fields))})")
            changes[key] = _convert(name, text, type(getattr(self, key)))
        return dataclasses.replace(self, **changes)


def _convert(name: str, text: str, kind: type) -> Any:
    if kind is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise SettingsError(f"{name}: {text!r} is not true or false")
    if kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            raise SettingsError(f"{name}: {text!r} is not a number") from None
    return text
