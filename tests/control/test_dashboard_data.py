"""The dashboard's data, in process: the metrics pages a sidecar serves (made by the real
MeshMetrics and ClusterCollector) read back as edges, readings differenced into rates, the graph
and a service's figures from them, the targets file, and the browser's one-time login."""

from __future__ import annotations

import asyncio
import json
import re
import typing
from pathlib import Path

import pytest

from tulle.control.registry import Endpoint
from tulle.control.sessions import LOGIN_SECONDS, SESSION_SECONDS, Sessions, session_of
from tulle.control.telemetry import LocalTraffic, difference, read_targets
from tulle.control.views import applies_to, endpoint_rows, graph, split
from tulle.obs.scrape import Reading, parse, quantile


def page(requests: dict[tuple[str, str, str, str, int, str], int]) -> str:
    """A metrics page as a sidecar serves it (tulle.obs.metrics' names and labels):
    ``(reporter, source, service, workload, status, peer principal)`` → how many requests."""
    lines = []
    for (reporter, source, service, workload, status, peer), count in requests.items():
        labels = {"reporter": reporter, "source_workload": source, "destination_service": service,
                  "destination_workload": workload, "response_code": str(status),
                  "response_flags": "-"}  # fmt: skip
        if reporter == "destination":  # the callee names the caller's principal
            labels |= {"source_principal": peer or "unknown",
                       "connection_security_policy": "mutual_tls" if peer else "none"}  # fmt: skip
        else:  # the caller names the upstream's
            labels |= {"destination_principal": peer or "unknown",
                       "connection_security_policy": "unknown"}  # fmt: skip
        text = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"tulle_requests_total{{{text}}} {count}")
        for bound in ("5", "+Inf"):
            lines.append(
                f'tulle_request_duration_milliseconds_bucket{{{text},le="{bound}"}} {count}'
            )
    return "\n".join(lines) + "\n"


def test_edges_rates_and_replicas_from_two_readings():
    peer = "spiffe://cluster.local/ns/default/sa/payment"
    before = Reading()
    parse(
        page(
            {("source", "frontend", "payment.default.svc.cluster.local", "payment", 200, peer): 10}
        ),
        "frontend",
        before,
    )
    parse(
        page({("destination", "frontend", "payment", "payment", 200, peer): 10}),
        "payment",
        before,
        "payment-0",
    )
    after = Reading()
    parse(
        page(
            {("source", "frontend", "payment.default.svc.cluster.local", "payment", 200, peer): 30}
        ),
        "frontend",
        after,
    )
    parse(page({("destination", "frontend", "payment", "payment", 200, peer): 20,
                ("destination", "frontend", "payment", "payment", 503, peer): 10}), "payment", after, "payment-0")  # fmt: skip
    delta = difference(before, after, 10.0, 1000.0)
    shown = graph(delta, [Endpoint("payment", "127.0.0.1", 9000, workload="payment")])
    (edge,) = shown["edges"]
    assert (edge["source"], edge["target"], edge["service"]) == ("frontend", "payment", "payment")
    assert edge["reporter"] == "destination"  # the callee's view: every attempt
    assert edge["rps"] == 2.0
    assert edge["success"] == pytest.approx(0.5)
    assert edge["client"]["success"] == 1.0  # the caller saw none fail (retries)
    assert edge["mtls"] == 1.0
    assert edge["replicas"] == [
        {"replica": "payment-0", "rps": 2.0, "success": 0.5, "requests": 20.0}
    ]
    assert {n["id"] for n in shown["nodes"]} == {"frontend", "payment"}
    assert split("payment", delta) == {"payment": 1.0}


def test_a_restarted_process_counts_from_zero():
    before, after = Reading(), Reading()
    parse(page({("source", "a", "b", "b", 200, ""): 50}), "a", before)
    parse(page({("source", "a", "b", "b", 200, ""): 5}), "a", after)
    delta = difference(before, after, 5.0, 0.0)
    assert delta.edges[("source", "a", "b", "b")].requests == 5


def test_quantile_as_prometheus():
    buckets = {1.0: 0.0, 5.0: 50.0, 10.0: 100.0, float("inf"): 100.0}
    assert quantile(buckets, 0.5) == 5.0
    assert quantile(buckets, 0.99) == pytest.approx(9.9)
    assert quantile({}, 0.5) is None


def test_ejected_endpoints_come_from_the_cluster_metrics():
    import random

    from prometheus_client import CollectorRegistry, generate_latest

    from tulle.engine.cluster import ClusterState
    from tulle.engine.cluster_config import ClusterSpec, OutlierSpec

    class Engine:  # what ClusterCollector reads of the engine
        def __init__(self) -> None:
            self.clusters: dict[str, ClusterState] = {}

        def clock(self) -> float:
            return 100.0

    from tulle.engine.cluster_stats import ClusterCollector

    engine = Engine()
    spec = ClusterSpec(
        "outbound|8080||payment.default.svc.cluster.local", outlier=OutlierSpec(1, 30)
    )
    state = ClusterState(spec, (), random.Random(1))
    state.outlier._health("127.0.0.1:9000").ejected_until = 130.0
    state.outlier._health("127.0.0.1:9001").ejected_until = 90.0  # over
    state.ejections, state.overflows = 2, 3
    engine.clusters[spec.name] = state
    registry = CollectorRegistry()
    registry.register(ClusterCollector(lambda: [engine]))  # type: ignore[list-item]
    reading = parse(generate_latest(registry).decode(), "frontend")
    reading.names["127.0.0.1:9000"] = "payment-0"
    facts = reading.clusters[("frontend", spec.name)]
    assert facts.ejected == {"127.0.0.1:9000"}
    assert (facts.ejections, facts.overflows) == (2.0, 3.0)
    delta = difference(None, reading, 1.0, 0.0)
    rows = endpoint_rows(
        "payment", [Endpoint("payment", "127.0.0.1", 9000, workload="payment")], delta
    )
    assert rows[0]["ejected_by"] == ["frontend"]
    assert rows[0]["replica"] == "payment-0"


def test_targets_file(tmp_path: Path):
    path = tmp_path / "targets.json"
    path.write_text(json.dumps([{"targets": ["127.0.0.1:1"], "labels": {
        "__metrics_path__": "/stats/prometheus", "workload": "w", "replica": "w-0",
        "address": "127.0.0.1:2"}}]))  # fmt: skip
    (target,) = read_targets(path)
    assert target.url == "http://127.0.0.1:1/stats/prometheus"
    assert (target.workload, target.replica, target.address) == ("w", "w-0", "127.0.0.1:2")
    path.write_text('{"targets": []}')
    with pytest.raises(ValueError, match=re.escape("targets.json: expected a JSON list")):
        read_targets(path)
    path.write_text('[{"labels": {}}]')
    with pytest.raises(ValueError, match="group 0: expected an object with a 'targets' list"):
        read_targets(path)


def test_local_traffic_keeps_the_last_good_targets(tmp_path: Path):
    path = tmp_path / "targets.json"
    path.write_text('[{"targets": ["127.0.0.1:1"]}]')
    traffic = LocalTraffic(path)
    assert len(traffic.targets()) == 1
    path.write_text("[not json")
    assert len(traffic.targets()) == 1
    assert asyncio.run(traffic.delta(10)).edges == {}


def test_config_that_applies_to_a_service():
    assert applies_to("payment", {"kind": "VirtualService", "spec": {"hosts": ["payment"]}})
    assert applies_to(
        "payment",
        {"kind": "DestinationRule", "spec": {"host": "payment.default.svc.cluster.local"}},
    )
    assert applies_to(
        "cart", {"kind": "RateLimit", "spec": {"selector": {"matchLabels": {"app": "cart"}}}}
    )
    assert applies_to(
        "catalog-cache", {"kind": "HTTPRoute", "spec": {"parentRefs": [{"name": "catalog-cache"}]}}
    )
    assert not applies_to("cart", {"kind": "VirtualService", "spec": {"hosts": ["catalog"]}})


def test_a_login_code_works_once_and_expires():
    now = [0.0]
    sessions = Sessions(lambda: now[0])
    code = sessions.new_code()
    session = sessions.redeem(code)
    assert session is not None
    assert sessions.valid(session)
    assert sessions.redeem(code) is None  # spent
    late = sessions.new_code()
    now[0] += LOGIN_SECONDS + 1
    assert sessions.redeem(late) is None  # expired
    assert sessions.valid(session)
    now[0] += SESSION_SECONDS
    assert not sessions.valid(session)
    assert not sessions.valid("guess")
    cookie = Sessions.cookie("abc")
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert session_of("a=1; tulle_session=abc") == "abc"
    assert session_of("a=1") is None


def test_the_fast_reader_agrees_with_prometheus_client():
    """``samples`` reads only the series it needs, without prometheus-client's parser; on a page
    prometheus-client writes, with awkward label values, both read the same numbers."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from tulle.obs.scrape import BUCKETS, REQUESTS, samples

    registry = CollectorRegistry()
    names = ("reporter", "source_workload", "destination_service", "handle", "response_code")
    requests = Counter("tulle_requests", "", names, registry=registry)
    duration = Histogram("tulle_request_duration_milliseconds", "", names, registry=registry,
                         buckets=(1, 5, 50))  # fmt: skip
    for values, count in ((("source", 'a "quoted", le="x"', "b", "le", "200"), 3),
                          (("destination", "back\\slash\nline", "c", "", "503"), 2)):  # fmt: skip
        requests.labels(*values).inc(count)
        for millis in (0.5, 7, 70)[:count]:
            duration.labels(*values).observe(millis)
    text = generate_latest(registry).decode()
    theirs = sorted(
        (s.name, sorted(s.labels.items()), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name in (REQUESTS, BUCKETS)
    )
    ours = sorted((name, sorted(labels.items()), value) for name, labels, value in samples(text))
    assert ours == theirs
    assert len(ours) == 2 + 2 * 4


class _Config:
    """The config sources as the dashboard reads them: nothing in force."""

    validation = None
    file_findings = ()

    def sources(self) -> dict:
        return {}


class _Registry:
    def endpoints(self) -> tuple[Endpoint, ...]:
        labels = (("version", "v1"),)
        return (Endpoint("catalog", "127.0.0.1", 9000, labels=labels, workload="catalog-v1"),)


class _Plane:
    kube = None
    config = _Config()
    registry = _Registry()
    connections: typing.ClassVar[dict] = {}

    def node_resources(self, node):
        return {}


def _dashboard(tmp_path: Path, traffic=None):
    from tulle.control.dashboard_api import DashboardApi

    (tmp_path / "index.html").write_text("<!doctype html>")
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "a.js").write_text("1")
    return DashboardApi(_Plane(), Sessions(), traffic, tmp_path)  # type: ignore[arg-type]


def _get(path: str, query: dict | None = None):
    from tulle.transport.http_server import Request

    return Request("GET", path, {k: [v] for k, v in (query or {}).items()}, {})


def test_the_data_routes_answer_and_refuse_clearly(tmp_path: Path):
    from tulle.control.auth import AccessDenied, Caller
    from tulle.control.prometheus import PrometheusTraffic

    admin, viewer, workload = Caller(True), Caller(False, viewer=True), Caller(False, "ns", "sa")
    dashboard = _dashboard(tmp_path)

    def call(request, caller=admin):
        response = asyncio.run(dashboard.api(request, caller))
        return response.status, json.loads(response.body)

    status, shown = call(_get("/api/v1/graph"), viewer)
    assert status == 200
    assert shown["source"] == "none"
    assert shown["nodes"] == [{"id": "catalog-v1", "service": "catalog", "version": "v1"}]
    assert call(_get("/api/v1/graph", {"window": "0"}))[0] == 400
    status, found = call(_get("/api/v1/services/nope"))
    assert (status, found["error"]) == (404, "no service 'nope'; services: catalog")
    status, service = call(_get("/api/v1/services/catalog"))
    assert status == 200
    assert service["versions"] == [
        {"workload": "catalog-v1", "service": "catalog", "version": "v1"}
    ]
    assert service["endpoints"][0]["address"] == "127.0.0.1:9000"
    with pytest.raises(AccessDenied, match="may not"):
        asyncio.run(dashboard.api(_get("/api/v1/graph"), workload))
    login = _get("/api/v1/dashboard/logins")
    login.method = "POST"
    with pytest.raises(AccessDenied, match="dashboard session may only read"):
        asyncio.run(dashboard.api(login, viewer))
    dashboard.traffic = PrometheusTraffic("http://127.0.0.1:9")  # nothing listens there
    status, away = call(_get("/api/v1/graph"))
    assert status == 502
    assert away["error"].startswith("traffic figures unavailable: http://127.0.0.1:9:")


def test_the_pages_are_the_built_files_only(tmp_path: Path):
    dashboard = _dashboard(tmp_path)
    index = dashboard.page(_get("/dashboard/"))
    assert (index.status, index.body) == (200, b"<!doctype html>")
    assert index.headers["content-security-policy"].startswith("default-src 'self'")
    assert index.headers["referrer-policy"] == "no-referrer"
    assert dashboard.page(_get("/dashboard/assets/a.js")).status == 200
    assert dashboard.page(_get("/dashboard/../../etc/passwd")).status == 404
    assert dashboard.page(_get("/dashboard")).headers["location"] == "/dashboard/"
    spent = dashboard.page(_get("/dashboard/login", {"code": "guess"}))
    assert spent.status == 401
    assert b"tulle dashboard" in spent.body
    code = dashboard.sessions.new_code()
    login = dashboard.page(_get("/dashboard/login", {"code": code}))
    assert login.status == 303
    assert login.headers["set-cookie"].startswith("tulle_session=")


def test_a_window_longer_than_the_history_is_the_history(tmp_path: Path):
    """A control plane that started 4 s ago answers "the last minute" with the 4 s it has."""
    traffic = LocalTraffic(tmp_path / "none.json")
    first, second = Reading(), Reading()
    parse(page({("source", "a", "b", "b", 200, ""): 10}), "a", first)
    parse(page({("source", "a", "b", "b", 200, ""): 30}), "a", second)
    traffic.history.extend([(100.0, 1000.0, first), (104.0, 1004.0, second)])
    delta = asyncio.run(traffic.delta(60))
    assert delta.seconds == 4.0
    assert delta.edges[("source", "a", "b", "b")].requests == 20
    traffic.history.popleft()
    assert asyncio.run(traffic.delta(60)).edges == {}  # one reading: no span yet
