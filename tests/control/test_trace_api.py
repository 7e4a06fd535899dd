"""The trace store in a real control plane (one, in a thread of this process, shared by the
module): OTLP/HTTP and OTLP/gRPC exports from authenticated workloads only, the refusals of
both and of the query API, the query API's answers, and ``tulle traces`` reading them."""

from __future__ import annotations

import asyncio
import gzip
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.rpc.status_pb2 import Status  # type: ignore[import-untyped]
from typer.testing import CliRunner

from tests.control.otlp_receiver import otlp_receiver
from tests.control.otlp_spans import CLIENT, export, hex_span, hex_trace, span
from tests.e2e.conftest import wait_until
from tulle.cli.main import app
from tulle.control.app import ControlPlane
from tulle.control.traces.otlp_messages import (
    ExportTraceServiceResponse,
)
from tulle.security.tokens import BootstrapTokens, admin_token, read_token_file

pytestmark = pytest.mark.timeout(120)

EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"content-type": "application/x-protobuf"}


@dataclass
class Plane:
    """The running control plane, its HTTP API, and the credentials of its callers."""

    plane: ControlPlane
    api: str
    admin: str
    frontend: str  # the bootstrap token of replica frontend-0 (ns default, sa frontend)

    def auth(self, token: str) -> dict[str, str]:
        return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("traces")
    (root / "config").mkdir()
    state = root / "state"
    frontend = read_token_file(BootstrapTokens(state).issue("default", "frontend", "frontend-0"))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    control = ControlPlane([root / "config"], state, "127.0.0.1", 0, 0, 0)
    asyncio.run_coroutine_threadsafe(control.start(), loop).result(60)
    try:
        yield Plane(control, f"http://127.0.0.1:{control.http_port}", admin_token(state), frontend)
    finally:
        asyncio.run_coroutine_threadsafe(control.stop(0), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()


def post(plane: Plane, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{plane.api}/v1/traces", content=body, headers=headers, timeout=30)


def get(plane: Plane, path: str, token: str | None = None, **params: str) -> httpx.Response:
    headers = plane.auth(token or plane.admin)
    return httpx.get(f"{plane.api}{path}", params=params, headers=headers, timeout=30)


def shop_page(trace: int) -> Message:
    """A frontend page: its server span, a client span to payment that failed once and was
    retried, and payment's two server spans."""
    return export(
        ("frontend", [
            span(trace, 1, name="GET /", start_ms=0, duration_ms=40,
                 attributes={"http.request.method": "GET", "http.response.status_code": 200}),
            span(trace, 2, parent=1, name="POST /pay", kind=CLIENT, start_ms=5, duration_ms=30,
                 events=[("attempt", 0.5), ("retry", 12.0)]),
        ]),
        ("payment", [
            span(trace, 3, parent=2, name="POST /pay", start_ms=6, duration_ms=10, error=True),
            span(trace, 4, parent=2, name="POST /pay", start_ms=18, duration_ms=15),
        ]),
    )  # fmt: skip


def test_a_workload_exports_over_http_and_the_admin_reads_the_trace(plane: Plane) -> None:
    answer = post(plane, shop_page(101).SerializeToString(), PROTOBUF | plane.auth(plane.frontend))
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-protobuf"
    assert not ExportTraceServiceResponse.FromString(answer.content).HasField("partial_success")
    listed = get(plane, "/api/v1/traces", service="payment", status="error").json()
    (row,) = [t for t in listed["traces"] if t["traceId"] == hex_trace(101)]
    assert row == {
        "traceId": hex_trace(101), "rootService": "frontend", "rootName": "GET /",
        "complete": True, "start": 1_700_000_000.0, "durationMs": 40.0, "spanCount": 4,
        "errorCount": 1, "status": "error", "services": ["frontend", "payment"],
    }  # fmt: skip
    assert listed["store"]["maxSpans"] == 20_000
    trace = get(plane, f"/api/v1/traces/{hex_trace(101)}").json()
    waterfall = [(s["depth"], s["service"], s["kind"], s["parentSpanId"], s["offsetMs"],
                  s["durationMs"], s["status"]) for s in trace["spans"]]  # fmt: skip
    assert waterfall == [
        (0, "frontend", "server", "", 0.0, 40.0, "unset"),
        (1, "frontend", "client", hex_span(1), 5.0, 30.0, "unset"),
        (2, "payment", "server", hex_span(2), 6.0, 10.0, "error"),
        (2, "payment", "server", hex_span(2), 18.0, 15.0, "unset"),
    ]
    client = trace["spans"][1]
    assert [(e["name"], e["offsetMs"]) for e in client["events"]] == [
        ("attempt", 0.5), ("retry", 12.0),
    ]  # fmt: skip
    assert trace["spans"][0]["attributes"]["http.response.status_code"] == 200
    assert trace["spans"][0]["resource"] == {
        "service.name": "frontend", "tulle.exporter": "ns/default/sa/frontend",
    }  # fmt: skip
    metrics = httpx.get(f"{plane.api}/metrics", timeout=30).text
    assert 'tulle_trace_spans_received_total{result="accepted",transport="http"}' in metrics


def test_otlp_json_and_gzip_are_taken_and_bad_spans_rejected_alone(plane: Plane) -> None:
    data = MessageToDict(export(("cart", [span(102, 1, name="GET /cart")])))
    s = data["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    s["traceId"], s["spanId"] = hex_trace(102), hex_span(1)
    headers = {"content-type": "application/json"} | plane.auth(plane.frontend)
    answer = post(plane, json.dumps(data).encode(), headers)
    assert (answer.status_code, answer.json()) == (200, {})
    bad = span(103, 2)
    bad.span_id = b"\0" * 8
    body = gzip.compress(export(("cart", [span(103, 1), bad])).SerializeToString())
    answer = post(plane, body, PROTOBUF | plane.auth(plane.frontend) | {"content-encoding": "gzip"})
    assert answer.status_code == 200
    partial = ExportTraceServiceResponse.FromString(answer.content).partial_success
    assert (partial.rejected_spans, partial.error_message) == (
        1, "span 'GET /': span_id must be 8 bytes, not all zero",
    )  # fmt: skip
    for trace in (102, 103):
        assert get(plane, f"/api/v1/traces/{hex_trace(trace)}").json()["spanCount"] == 1


@pytest.mark.parametrize(
    ("headers", "body", "status", "message"),
    [
        (PROTOBUF, b"", 401, "no credential: send 'authorization: Bearer <token>'"),
        (PROTOBUF | {"authorization": "Bearer nope"}, b"", 401,
         "credential refused: unknown or revoked bootstrap token"),
        ({"content-type": "text/plain", "authorization": "Bearer {frontend}"}, b"", 415,
         "Content-Type 'text/plain': send application/x-protobuf or application/json"),
        (PROTOBUF | {"authorization": "Bearer {frontend}"}, b"\xff\xff\xff", 400,
         "the body is not an OTLP ExportTraceServiceRequest"),
        (PROTOBUF | {"authorization": "Bearer {frontend}", "content-encoding": "br"}, b"", 415,
         "Content-Encoding 'br': send gzip or none"),
    ],
)  # fmt: skip
def test_otlp_http_refusals_say_why(
    plane: Plane, headers: dict[str, str], body: bytes, status: int, message: str
) -> None:
    headers = {k: v.format(frontend=plane.frontend) for k, v in headers.items()}
    answer = post(plane, body, headers)
    assert answer.status_code == status
    assert message in Status.FromString(answer.content).message
    assert plane.frontend not in answer.text


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/v1/traces", {"status": "bad"}, 400, "status: 'bad' is not ok or error"),
        ("/api/v1/traces", {"limit": "0"}, 400, "limit: '0' must be a finite number of at least 1"),
        ("/api/v1/traces", {"limit": "5000"}, 400, "limit: a whole number from 1 to 1000"),
        ("/api/v1/traces", {"minDurationMs": "x"}, 400, "minDurationMs: 'x' is not a number"),
        ("/api/v1/traces", {"servce": "a"}, 400, "unknown parameter 'servce'"),
        ("/api/v1/traces/xyz", {}, 400, "'xyz' is not a trace id (32 hex digits)"),
        (f"/api/v1/traces/{'ab' * 16}", {}, 404, f"no trace {'ab' * 16} in the store"),
    ],
)  # fmt: skip
def test_query_refusals_say_why(
    plane: Plane, path: str, params: dict[str, str], status: int, message: str
) -> None:
    answer = get(plane, path, **params)
    assert answer.status_code == status
    assert message in answer.json()["error"]


def test_a_workload_may_export_but_not_read(plane: Plane) -> None:
    answer = get(plane, "/api/v1/traces", token=plane.frontend)
    assert answer.status_code == 403
    assert "workload ns/default/sa/frontend may not GET /api/v1/traces" in answer.json()["error"]
    assert httpx.get(f"{plane.api}/api/v1/traces", timeout=30).status_code == 401


def grpc_export(plane: Plane, token: str | None, secure: bool = True) -> bytes:
    """An export as a stock grpcio client sends it (the synchronous client: the control
    plane's asyncio server runs on its own loop, in its own thread)."""
    control = plane.plane
    if secure:
        bundle = (control.state_dir / "root-cert.pem").read_bytes()
        target = f"127.0.0.1:{control.secure_xds_port}"
        channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(bundle))
    else:
        channel = grpc.insecure_channel(f"127.0.0.1:{control.xds_port}")
    metadata = [("authorization", f"Bearer {token}")] if token else []
    with channel:
        call = channel.unary_unary(EXPORT)
        answer: bytes = call(shop_page(104).SerializeToString(), metadata=metadata, timeout=30)
        return answer


def test_grpc_exports_need_tls_and_a_credential(plane: Plane) -> None:
    answer = grpc_export(plane, plane.frontend)
    assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
    assert get(plane, f"/api/v1/traces/{hex_trace(104)}").json()["spanCount"] == 4
    for token, secure, code, message in (
        (None, True, grpc.StatusCode.UNAUTHENTICATED, "no credential"),
        ("nope", True, grpc.StatusCode.UNAUTHENTICATED, "credential refused"),
        (plane.frontend, False, grpc.StatusCode.FAILED_PRECONDITION, "only over TLS"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            grpc_export(plane, token, secure)
        assert refused.value.code() == code
        assert message in (refused.value.details() or "")


def test_tulle_traces_lists_and_draws_a_waterfall(plane: Plane) -> None:
    post(plane, shop_page(105).SerializeToString(), PROTOBUF | plane.auth(plane.frontend))
    base = ["--server", plane.api, "--token", plane.admin]
    runner = CliRunner()
    listed = runner.invoke(app, ["traces", "--service", "payment", "--status", "error", *base])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split() == ["TRACE", "ID", "STARTED", "SERVICE", "ROOT", "SPAN", "DURATION",
                                "SPANS", "STATUS"]  # fmt: skip
    row = next(line for line in lines if line.startswith(hex_trace(105)))
    assert row.split()[2:] == ["frontend", "GET", "/", "40.0ms", "4", "error", "(1)"]
    none = runner.invoke(app, ["traces", "--service", "nobody", *base])
    assert none.output.startswith("no traces match")
    drawn = runner.invoke(app, ["traces", hex_trace(105), *base])
    assert drawn.exit_code == 0, drawn.output
    assert drawn.output.splitlines() == [
        f"trace {hex_trace(105)}: 4 spans, 2 services (frontend, payment), 40.0ms, "
        "error (1 failed span)",
        "frontend: GET /         |████████████████████████████████████████|    40.0ms  server",
        "  frontend: POST /pay   |     ██████████████████████████████     |    30.0ms  client",
        "      · +0.5ms attempt",
        "      · +12.0ms retry",
        "    payment: POST /pay  |      ██████████                        |    10.0ms  server  ERROR",
        "    payment: POST /pay  |                  ███████████████       |    15.0ms  server",
    ]
    missing = runner.invoke(app, ["traces", "ab" * 16, *base])
    assert missing.exit_code == 1
    assert f"error: no trace {'ab' * 16} in the store" in missing.output
    bad = runner.invoke(app, ["traces", "--min-duration", "soon", *base])
    assert bad.exit_code == 2
    assert "--min-duration: invalid duration 'soon'" in bad.output


COLLECTOR = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec:
  tracing:
    otlp: {{endpoint: '{url}', protocol: grpc}}
"""


def test_a_mesh_naming_a_grpc_collector_has_the_store_relay_to_it(plane: Plane) -> None:
    """The OTLP export reaches a real OTLP/gRPC receiver (opentelemetry-proto's TraceService
    on grpcio): the workload sends to the store over HTTP, the store keeps the spans and
    relays them over gRPC."""
    admin = plane.auth(plane.admin)
    with otlp_receiver() as receiver:
        mesh = COLLECTOR.format(url=receiver.url)
        applied = httpx.post(f"{plane.api}/api/v1/resources", content=mesh, headers=admin,
                             timeout=60)  # fmt: skip
        assert applied.status_code == 200, applied.text
        try:
            page = shop_page(106).SerializeToString()
            assert post(plane, page, PROTOBUF | plane.auth(plane.frontend)).status_code == 200
            wait_until(lambda: len(receiver.spans()) == 4, timeout=30)
            assert sorted(receiver.spans()) == [
                ("frontend", hex_trace(106), hex_span(1)), ("frontend", hex_trace(106), hex_span(2)),
                ("payment", hex_trace(106), hex_span(3)), ("payment", hex_trace(106), hex_span(4)),
            ]  # fmt: skip
            assert get(plane, f"/api/v1/traces/{hex_trace(106)}").json()["spanCount"] == 4
        finally:
            gone = httpx.delete(f"{plane.api}/api/v1/resources/Mesh/tulle-system/mesh",
                                headers=admin, timeout=60)  # fmt: skip
            assert gone.status_code == 200, gone.text
    metrics = httpx.get(f"{plane.api}/metrics", timeout=30).text
    assert 'tulle_trace_forwarded_spans_total{result="sent"} 4.0' in metrics
