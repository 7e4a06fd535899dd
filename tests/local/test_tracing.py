"""Tracing end to end under ``tulle up``: a caller -> a's sidecar -> a's app -> a's sidecar -> b
(library mode: its middleware, its app, its ``tulle.client``) -> c's sidecar -> c's app. Each app
passes the trace headers on (tests/local/trace_hop.py, plain Python), the Mesh sends spans to a
real OTLP/HTTP receiver of the test (``tracing.otlp.endpoint``), sampling 0 %: only callers'
decisions count, so every expectation is exact. Checked: one trace per sampled request with the
spans of every hop, correct parent-child links and kinds, each process's service name, W3C and
B3 callers joining their own trace, unsampled callers making no span, and a retried call's
attempts as events on the library's client span, each attempt a server span of c."""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.local.conftest import Mesh, running_mesh, workload
from tests.otlp_receiver import Receiver, otlp_receiver

pytestmark = pytest.mark.timeout(240)

HOP = "[python3, tests/local/trace_hop.py]"
RETRIES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: c}
spec:
  hosts: [c]
  http:
    - route: [{destination: {host: c}}]
      retries: {attempts: 2, retryOn: 5xx}
---
"""
SERVER, CLIENT = 2, 3  # OTLP span kinds


def config(port: int) -> str:
    mesh = f"""\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec:
  tracing: {{sampling: 0, otlp: {{endpoint: "http://127.0.0.1:{port}"}}}}
---
"""
    return (
        mesh + workload("a", HOP) + workload("b", HOP, mesh="library") + workload("c", HOP)
        + RETRIES
    )  # fmt: skip


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Mesh, Receiver]]:
    with (
        otlp_receiver() as receiver,
        running_mesh(tmp_path_factory.mktemp("tracing"), config(receiver.port)) as mesh,
    ):
        yield mesh, receiver


def call(mesh: Mesh, headers: dict[str, str], fail: bool = False) -> httpx.Response:
    """The caller: GET a's /hop through a's sidecar, on to b, then c."""
    query = urllib.parse.urlencode({"to": ["b:8080", "c:8080"], "fail": "1" if fail else ""},
                                   doseq=True)  # fmt: skip
    return httpx.get(f"http://{mesh.address('a')}/hop?{query}", headers=headers, timeout=60)


def spans_of(receiver: Receiver, trace_id: str) -> list[tuple[str, Any]]:
    return [(s, span) for s, span in receiver.services() if span.trace_id.hex() == trace_id]


def attributes(span: Any) -> dict[str, Any]:
    result = {}
    for kv in span.attributes:
        value = kv.value
        result[kv.key] = getattr(value, value.WhichOneof("value"))
    return result


def chain(receiver: Receiver, trace_id: str, count: int) -> list[tuple[str, Any]]:
    """The trace's spans once ``count`` have arrived, root first, each the parent of the next
    (checked)."""
    wait_until(lambda: len(spans_of(receiver, trace_id)) >= count, timeout=60)
    spans = spans_of(receiver, trace_id)
    by_parent = {span.parent_span_id: (service, span) for service, span in spans}
    ids = {span.span_id for _, span in spans}
    roots = [(s, span) for s, span in spans if span.parent_span_id not in ids]
    assert len(roots) == 1, [(s, span.name, span.parent_span_id.hex()) for s, span in spans]
    ordered = [roots[0]]
    while ordered[-1][1].span_id in by_parent:
        ordered.append(by_parent[ordered[-1][1].span_id])
    return ordered


def assert_hops(ordered: list[tuple[str, Any]], caller_span: str) -> None:
    """a's server and client spans, b's server and client spans, c's server span, in a line;
    the root's parent is the caller's span; each span starts after its parent, and a client
    span ends within its process's server span (a callee's server span may end after its
    caller had the answer: a WSGI server closes the response after sending it)."""
    assert [(service, span.kind) for service, span in ordered] == [
        ("a", SERVER), ("a", CLIENT), ("b", SERVER), ("b", CLIENT), ("c", SERVER),
    ]  # fmt: skip
    assert ordered[0][1].parent_span_id.hex() == caller_span
    for (parent_service, parent), (child_service, child) in itertools.pairwise(ordered):
        assert parent.start_time_unix_nano <= child.start_time_unix_nano  # sent, then received
        if parent_service == child_service:  # a call made while serving: answered before
            assert child.end_time_unix_nano <= parent.end_time_unix_nano
    client = attributes(ordered[1][1])
    assert client["http.request.method"] == "GET"
    assert client["server.address"] == "b"
    assert client["http.response.status_code"] == 200
    assert client["tulle.upstream_cluster"].startswith("outbound|8080||b.")
    server = attributes(ordered[4][1])
    assert server["url.path"] == "/hop"
    assert server["http.response.status_code"] == 200


def test_a_w3c_callers_trace_crosses_sidecars_and_the_library(
    traced: tuple[Mesh, Receiver],
) -> None:
    mesh, receiver = traced
    trace, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    # First, callers that must make no span: one that says not sampled, one with no context
    # (the mesh samples 0 %). Their spans would be queued before the sampled call's.
    unsampled = "0af7651916cd43dd8448eb211c80319c"
    assert call(mesh, {"traceparent": f"00-{unsampled}-{parent}-00"}).status_code == 200
    quiet = call(mesh, {})
    assert quiet.status_code == 200
    assert quiet.json()["headers"].get("b3") == "0"  # a's app was told: not sampled
    reply = call(mesh, {"traceparent": f"00-{trace}-{parent}-01", "tracestate": "vendor=1"})
    assert reply.status_code == 200, reply.text
    ordered = chain(receiver, trace, 5)
    assert_hops(ordered, parent)
    # What each app saw is its own server span's context (the app only passes it on).
    seen = reply.json()
    assert seen["headers"]["traceparent"] == f"00-{trace}-{ordered[0][1].span_id.hex()}-01"
    assert seen["headers"]["tracestate"] == "vendor=1"
    assert seen["next"]["answer"]["headers"]["traceparent"].split("-")[2] == (
        ordered[2][1].span_id.hex()
    )
    every = {span.trace_id.hex() for _, span in receiver.services()}
    assert unsampled not in every
    assert every == {trace}  # the call without context made none either


def test_a_b3_callers_trace_joins_its_own(traced: tuple[Mesh, Receiver]) -> None:
    mesh, receiver = traced
    trace, parent = "80f198ee56343ba864fe8b2a57d3eff7", "e457b5a2e4d86bd1"
    reply = call(mesh, {"b3": f"{trace}-{parent}-1"})
    assert reply.status_code == 200, reply.text
    assert_hops(chain(receiver, trace, 5), parent)
    assert reply.json()["headers"]["b3"].startswith(f"{trace}-")  # answered in kind


def test_retries_are_attempt_events_and_each_attempt_a_server_span(
    traced: tuple[Mesh, Receiver],
) -> None:
    """c fails: b's library client tries it three times (the VirtualService), and b's 503 is
    retried by a's sidecar too (the mesh's default policy): every attempt an event on its
    client span, every attempt's server span that client span's child."""
    mesh, receiver = traced
    trace, parent = "5b8aa5a2d2c872e8321cf37308d69df2", "051581bf3cb55c13"
    reply = call(mesh, {"x-b3-traceid": trace, "x-b3-spanid": parent, "x-b3-sampled": "1"},
                 fail=True)  # fmt: skip
    assert reply.status_code == 503
    wait_until(lambda: any(s == "a" and span.kind == CLIENT
                           for s, span in spans_of(receiver, trace)), timeout=60)  # fmt: skip
    (a_client,) = [
        span for s, span in spans_of(receiver, trace) if s == "a" and span.kind == CLIENT
    ]
    tries = len(a_client.events)  # a's sidecar: b's 503 retried by the default policy
    assert tries >= 2
    wait_until(lambda: len(spans_of(receiver, trace)) == 2 + tries * 5, timeout=60)
    spans = spans_of(receiver, trace)
    b_servers = [span for s, span in spans if s == "b" and span.kind == SERVER]
    assert {span.parent_span_id for span in b_servers} == {a_client.span_id}
    b_clients = [span for s, span in spans if s == "b" and span.kind == CLIENT]
    assert len(b_servers) == len(b_clients) == tries
    for b_client in b_clients:
        events = [(e.name, attributes(e)) for e in b_client.events]
        assert [(name, a["tulle.attempt"], a["tulle.retried"]) for name, a in events] == [
            ("attempt", 1, True), ("attempt", 2, True), ("attempt", 3, False),
        ]  # fmt: skip
        assert all(a["http.response.status_code"] == 503 for _, a in events)
        client = attributes(b_client)
        assert client["http.request.resend_count"] == 2
        assert client["tulle.response_flags"] == "URX"
        assert b_client.status.code == b_client.status.STATUS_CODE_ERROR
        c_servers = [
            span for s, span in spans if s == "c" and span.parent_span_id == b_client.span_id
        ]
        assert len(c_servers) == 3
        assert {b_client.parent_span_id} <= {span.span_id for span in b_servers}


def test_a_kubelet_probe_of_a_library_app_makes_no_span(traced: tuple[Mesh, Receiver]) -> None:
    """A kubelet's probe (``User-Agent: kube-probe/...``) reaches a library app's middleware
    directly, as it reaches a sidecar's app: no span, even with a sampled context; the same
    request from anyone else has its server span."""
    mesh, receiver = traced
    probed, plain = "1f7a2b3c4d5e6f708192a3b4c5d6e7f8", "2f7a2b3c4d5e6f708192a3b4c5d6e7f8"
    parent = "0123456789abcdef"
    url = f"http://{mesh.address('b')}/hop"
    probe_headers = {"traceparent": f"00-{probed}-{parent}-01", "user-agent": "kube-probe/1.31"}
    assert httpx.get(url, headers=probe_headers, timeout=30).status_code == 200
    assert httpx.get(url, headers={"traceparent": f"00-{plain}-{parent}-01"},
                     timeout=30).status_code == 200  # fmt: skip
    # b's exporter sends its spans in the order they ended: the probe's, had it one, first.
    wait_until(lambda: spans_of(receiver, plain), timeout=60)
    (only,) = spans_of(receiver, plain)
    assert only[0] == "b"
    assert only[1].kind == SERVER
    assert not spans_of(receiver, probed)
