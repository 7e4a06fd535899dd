"""The Mesh's access log as the control plane sends it to sidecars and libraries: the
``access_log`` of each HttpConnectionManager and ``tcp_proxy`` (Envoy's fields, as
``tulle.control.translate.access_log`` writes them): one ``envoy.access_loggers.stdout``
whose format is ``json_format`` (JSON lines) or text (Envoy-style lines); none at all: the
Mesh turned the access log off. Any other logger is a NACK: Tulle writes only to stdout."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from envoy.extensions.access_loggers.stream.v3 import stream_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tulle.engine.listener_filters import network_filters
from tulle.engine.matching import ConfigError
from tulle.xds.types import HCM_FILTER, STDOUT_ACCESS_LOG, TCP_PROXY_FILTER

_LOGGING: Final[dict[str, type[Any]]] = {
    HCM_FILTER: hcm.HttpConnectionManager, TCP_PROXY_FILTER: tcp_proxy_pb2.TcpProxy,
}  # fmt: skip


@dataclass(frozen=True)
class AccessLogSetting:
    """Whether requests are logged, and as text lines (``text``) or JSON."""

    enabled: bool
    text: bool = False


def access_log_setting(listeners: Mapping[str, Any]) -> AccessLogSetting | None:
    """The mesh's access log, from the listeners' HttpConnectionManagers and ``tcp_proxy``
    filters (the control plane sets the same on each): off when none has one; None when there
    is no such filter at all (nothing to say: the workload keeps what it has). ConfigError (a
    NACK) for a logger Tulle does not implement."""
    seen = False
    for listener, logging in network_filters(listeners, _LOGGING):
        seen = True
        for log in logging.access_log:
            return _setting(log, listener)
    return AccessLogSetting(False) if seen else None


def _setting(log: Any, listener: str) -> AccessLogSetting:
    stdout = stream_pb2.StdoutAccessLog()
    if log.name != STDOUT_ACCESS_LOG or not log.typed_config.Unpack(stdout):
        raise ConfigError(
            f"listener {listener}: access log {log.name!r} is not supported "
            f"(Tulle writes its access log to stdout: {STDOUT_ACCESS_LOG})"
        )
    log_format = stdout.log_format
    text = log_format.HasField("text_format_source") or log_format.HasField("text_format")
    return AccessLogSetting(True, text)
