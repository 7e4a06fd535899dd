"""The access log's text lines (the Mesh's ``accessLog.format: TEXT``): Envoy's default shape,
every field of the JSON line, request text quoted and escaped so it cannot forge a field; and
the Mesh's setting as the control plane writes it and the data plane reads it back."""

from __future__ import annotations

import io
import shlex

import pytest
from envoy.config.accesslog.v3 import accesslog_pb2
from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

from tulle.api.model import MeshSettings
from tulle.control.translate.access_log import access_logs
from tulle.control.translate.protos import pack
from tulle.engine.access_log_config import AccessLogSetting, access_log_setting
from tulle.engine.matching import ConfigError
from tulle.engine.message import Request, Response, finished
from tulle.obs.access_log import AccessLog
from tulle.obs.connection import TcpConnection
from tulle.xds.types import HCM_FILTER, TCP_PROXY_FILTER

STARTED = 1796564702.25  # 2026-12-06T13:45:02.250Z


def test_a_text_line_has_every_field_in_envoys_order() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.configure(True, text=True)
    request = Request("GET", '/p?q="a b"', "web:8080", [("x-request-id", 'id" 9')], b"", "10.1.2.3")
    response = Response(503, [], b"no", flag="UH", reason="no healthy endpoint",
                        route="r1", cluster="outbound|8080||web", upstream="", attempts=1)  # fmt: skip
    log.record(finished("http_proxy", request, response, STARTED, STARTED + 0.0125, 2))
    log.flush()
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("[2026-12-06T13:45:02.250Z] ")
    fields = shlex.split(line.split("] ", 1)[1])  # the quoting is a shell's too: one field each
    assert fields == [
        'GET /p?q="a b"',
        "503",
        "UH",
        "no healthy endpoint",
        "0",
        "2",
        "12.500",
        "1",
        'id" 9',
        "web:8080",
        "-",
        "outbound|8080||web",
        "r1",
        "http_proxy",
        "10.1.2.3",
        "-",
    ]


def test_a_tcp_connection_has_a_text_line_too() -> None:
    stream = io.StringIO()
    log = AccessLog(stream)
    log.configure(True, text=True)
    connection = TcpConnection("inbound", STARTED, "10.0.0.9", "db.default.svc.cluster.local",
                               "inbound|5432||", "127.0.0.1:5432")  # fmt: skip
    connection.ended, connection.received, connection.sent = STARTED + 1, 10, 20
    log.record_tcp(connection)
    log.flush()
    (line,) = stream.getvalue().splitlines()
    fields = shlex.split(line.split("] ", 1)[1])
    assert fields[:7] == ["TCP", "0", "-", "-", "10", "20", "1000.000"]
    assert fields[-1] == "db.default.svc.cluster.local"


def _listeners(logs: list[accesslog_pb2.AccessLog]) -> dict[str, listener_pb2.Listener]:
    manager = hcm.HttpConnectionManager(stat_prefix="x", access_log=logs)
    proxy = tcp_proxy_pb2.TcpProxy(stat_prefix="y", cluster="y", access_log=logs)
    chains = [
        listener_components_pb2.FilterChain(
            filters=[listener_components_pb2.Filter(name=name, typed_config=pack(config))]
        )
        for name, config in ((HCM_FILTER, manager), (TCP_PROXY_FILTER, proxy))
    ]
    return {"l": listener_pb2.Listener(name="l", filter_chains=chains)}


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        (MeshSettings(), AccessLogSetting(True, False)),
        (MeshSettings(access_log_format="TEXT"), AccessLogSetting(True, True)),
        (MeshSettings(access_log=False, access_log_format="TEXT"), AccessLogSetting(False)),
    ],
)
def test_the_mesh_setting_survives_the_trip_through_xds(
    settings: MeshSettings, expected: AccessLogSetting
) -> None:
    assert access_log_setting(_listeners(access_logs(settings))) == expected


def test_no_connection_manager_says_nothing_and_another_logger_is_refused() -> None:
    assert access_log_setting({"l": listener_pb2.Listener(name="l")}) is None
    file_log = accesslog_pb2.AccessLog(name="envoy.access_loggers.file")
    with pytest.raises(ConfigError, match=r"listener l: access log 'envoy\.access_loggers\.file'"):
        access_log_setting(_listeners([file_log]))
