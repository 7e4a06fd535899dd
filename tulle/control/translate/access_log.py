"""The Mesh's access log in a sidecar's or library's listeners, in Envoy's fields as Istio sets
them (``meshConfig.accessLogFile: /dev/stdout``): each HttpConnectionManager and ``tcp_proxy``
has an ``access_log`` writing to stdout (``envoy.access_loggers.stdout``) whose format says JSON
(``json_format``: the keys Tulle writes, each with the Envoy operator it stands for) or text
(``text_format_source``: Envoy's default line, the fields Tulle writes). The data plane reads
only whether there is one and which format it has (:mod:`tulle.engine.access_log_config`): its
lines are its own, documented in docs/proxy.md. ``accessLog.enabled: false``: none at all.
Proxyless gRPC clients get none (grpcio writes no access log)."""

from __future__ import annotations

from typing import Any, Final

from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.core.v3 import substitution_format_string_pb2 as formats
from envoy.extensions.access_loggers.stream.v3 import stream_pb2

from tulle.api.model import MeshSettings
from tulle.control.translate.protos import pack
from tulle.xds.types import STDOUT_ACCESS_LOG

JSON_FIELDS: Final = {
    "start_time": "%START_TIME%", "duration_ms": "%DURATION%", "listener": "%TULLE_LISTENER%",
    "method": "%REQ(:METHOD)%", "authority": "%REQ(:AUTHORITY)%", "path": "%REQ(:PATH)%",
    "status": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%",
    "reason": "%RESPONSE_CODE_DETAILS%", "route": "%ROUTE_NAME%",
    "cluster": "%UPSTREAM_CLUSTER%", "upstream": "%UPSTREAM_HOST%",
    "attempts": "%UPSTREAM_REQUEST_ATTEMPT_COUNT%", "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%", "request_id": "%REQ(X-REQUEST-ID)%",
    "source": "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
    "peer_principal": "%DOWNSTREAM_PEER_URI_SAN%",
}  # fmt: skip
"""The JSON line's keys (docs/proxy.md), with the Envoy operator each stands for."""

TEXT_FORMAT: Final = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
    '"%RESPONSE_CODE_DETAILS%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%UPSTREAM_REQUEST_ATTEMPT_COUNT% "%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" '
    '"%UPSTREAM_HOST%" "%UPSTREAM_CLUSTER%" "%ROUTE_NAME%" %TULLE_LISTENER% '
    '"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%" "%DOWNSTREAM_PEER_URI_SAN%"\n'
)
"""The text line's fields (tulle.obs.access_text), as Envoy operators."""


def access_logs(settings: MeshSettings) -> list[Any]:
    """The ``access_log`` of every HttpConnectionManager and ``tcp_proxy`` of a sidecar's or
    library's listeners: empty when the Mesh turns the access log off."""
    if not settings.access_log:
        return []
    log_format = formats.SubstitutionFormatString()
    if settings.access_log_format == "TEXT":
        log_format.text_format_source.inline_string = TEXT_FORMAT
    else:
        log_format.json_format.update(JSON_FIELDS)
    stdout = stream_pb2.StdoutAccessLog(log_format=log_format)
    return [accesslog_pb2.AccessLog(name=STDOUT_ACCESS_LOG, typed_config=pack(stdout))]
