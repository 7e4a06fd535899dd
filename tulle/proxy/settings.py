"""What ``tulle proxy`` was asked to run, checked, and handed from the CLI to the sidecar process
as one JSON argument (see ``tulle.proxy.__main__``)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass

from tulle.proxy.admin_guard import is_loopback
from tulle.proxy.health import ProbersError, parse_probers
from tulle.xds.grpc_stream import split_address
from tulle.xds.node import NodeIdError, parse_node_id

LOG_LEVELS = "debug, info, warning, error"


class SettingsError(ValueError):
    """An option is wrong: the message starts with the option's name."""


@dataclass(frozen=True)
class ProxySettings:
    """The sidecar's options, as ``tulle proxy --help`` describes them."""

    xds: str = "127.0.0.1:15010"
    node_id: str = ""
    admin_port: int = 15000
    admin_host: str = "127.0.0.1"
    admin_token_file: str | None = None  # None: admin_guard.default_token_path
    stats_port: int | None = None  # the read-only listener (/ready, /stats/prometheus)
    stats_host: str = "127.0.0.1"
    http_proxy_port: int | None = None
    host: str = "127.0.0.1"
    outbound_port: int | None = None
    inbound_port: int | None = None
    app_port: int | None = None
    mark: int | None = None
    drain_seconds: float = 5.0
    log_level: str = "warning"
    request_header_timeout: float = 10.0
    idle_timeout: float = 60.0
    xds_root_cert: str | None = None  # the control plane's trust bundle: xDS over TLS
    token_file: str | None = None  # the replica's bootstrap token (xDS and the CA)
    server: str | None = None  # the control plane's HTTP API (trace store); None: xDS host:15014
    health_port: int | None = None  # the kubelet's listener (/ready, /app-health/...)
    health_host: str = "127.0.0.1"
    app_probers: str = ""  # TULLE_APP_PROBERS: the app's original HTTP probes (JSON)

    def check(self) -> None:
        """Raise SettingsError naming the first option that cannot work."""
        try:
            parse_node_id(self.node_id)
        except NodeIdError as error:
            raise SettingsError(f"--node-id: {error}") from None
        try:
            split_address(self.xds)
        except ValueError as error:
            raise SettingsError(f"--xds: {error}") from None
        if not is_loopback(self.admin_host):
            raise SettingsError(
                f"--admin-host: {self.admin_host!r} is not a loopback address: the admin "
                "listener (config dump, drain, quit) is for this host only; --stats-host binds "
                "the read-only /ready and /stats/prometheus listener elsewhere"
            )
        listeners = (("--admin-port", self.admin_port), ("--stats-port", self.stats_port),
                     ("--health-port", self.health_port))  # fmt: skip
        for option, port in listeners:
            if port is not None and not 0 <= port <= 65535:
                raise SettingsError(f"{option}: {port} is not a port (0-65535; 0: any free one)")
        taken: dict[int, str] = {}
        for option, port in listeners:
            if port and port in taken:
                owner = taken[port]
                raise SettingsError(
                    f"{option}: {port} is the {owner[2:-5]} listener's port ({owner})"
                )
            if port:
                taken[port] = option
        try:
            parse_probers(self.app_probers)
        except ProbersError as error:
            raise SettingsError(f"--app-probers (TULLE_APP_PROBERS): {error}") from None
        for option, value in (
            ("--request-header-timeout", self.request_header_timeout),
            ("--idle-timeout", self.idle_timeout),
        ):
            if not value > 0:
                raise SettingsError(f"{option}: {value!r} is not a positive number of seconds")
        if (self.xds_root_cert is None) != (self.token_file is None):
            raise SettingsError(
                "--xds-root-cert: the secure xDS port needs both --xds-root-cert and --token-file"
            )
        for option, path in (("--xds-root-cert", self.xds_root_cert),
                             ("--token-file", self.token_file)):  # fmt: skip
            if path is not None and not os.path.isfile(path):
                raise SettingsError(f"{option}: {path} is not a file")
        if self.server is not None and not self.server.startswith(("http://", "https://")):
            raise SettingsError(f"--server: {self.server!r} is not an http:// or https:// URL")
        if self.log_level.lower() not in LOG_LEVELS.split(", "):
            raise SettingsError(f"--log-level: {self.log_level!r} is not one of {LOG_LEVELS}")

    def to_json(self) -> str:
        """The settings as one JSON object."""
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ProxySettings:
        """Settings from ``to_json``'s output; SettingsError when it is not that."""
        try:
            return cls(**json.loads(text))
        except (ValueError, TypeError) as error:
            raise SettingsError(f"settings: not what `tulle proxy` hands over ({error})") from None
