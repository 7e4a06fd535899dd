"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. The engine's resilience features: retries, a weighted
split, outlier ejection, the circuit breaker and fault injection."""

from __future__ import annotations

import collections
import threading

import httpx

from tests.e2e.conftest import (
    register,
    synced,
    wait_until,
)
from tests.e2e.sidecar_http import (
    WEB,
    backend_of,
    routes,
    rule,
)


def test_retries_turn_a_half_failing_backend_into_99_percent_success(control_plane, processes):
    register(control_plane, processes, good={}, flaky={"fail_rate": 0.5})
    routes(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 3, retryOn: 5xx}",
    )
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client:
        statuses = [client.get(f"{WEB}/pay").status_code for _ in range(500)]
    # A retry goes to another endpoint than the one that failed (as Istio's previous-hosts rule).
    assert statuses.count(200) / 500 >= 0.99
    routes(control_plane, "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}")
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client:
        without = [client.get(f"{WEB}/pay").status_code for _ in range(500)]
    # Half of the flaky one's half: each request fails with p = 0.25, sd = sqrt(500 * 0.25 *
    # 0.75) = 9.7 requests = 1.9%; ±10% is 5.2 sd. (With retries a retry goes to the good one:
    # no failure is expected at all.)
    assert 0.15 <= without.count(503) / 500 <= 0.35


def test_split_80_20_within_statistical_bounds(control_plane, processes):
    register(control_plane, processes, a={"version": "v1"}, b={"version": "v2"})
    rule(
        control_plane,
        "{}",
        "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]",
    )
    routes(
        control_plane,
        """\
    - route:
        - {destination: {host: web, subset: v1}, weight: 80}
        - {destination: {host: web, subset: v2}, weight: 20}""",
    )
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client:
        counts = collections.Counter(backend_of(client.get(f"{WEB}/")) for _ in range(3200))
    # Binomial(3200, 0.2): sd = sqrt(3200 * 0.2 * 0.8) = 22.6 requests = 0.71%; ±3% is 4.2 sd
    # (with 2,000 requests it was 3.4).
    assert 0.17 <= counts["b"] / 3200 <= 0.23
    assert counts["a"] + counts["b"] == 3200


def test_a_bad_endpoint_is_ejected_and_avoided(control_plane, processes):
    register(control_plane, processes, a={}, b={}, bad={"fail_rate": 1.0})
    rule(
        control_plane,
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}}",
    )
    routes(control_plane, "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}")
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client:
        first = [backend_of(client.get(f"{WEB}/")) for _ in range(12)]
        assert first.count("bad") == 3  # three failures, then ejected
        later = [backend_of(client.get(f"{WEB}/")) for _ in range(60)]
    assert "bad" not in later
    clusters = sidecar.admin("/clusters").json()["clusters"]
    web = next(c for c in clusters if c["name"] == "outbound|8080||web.default.svc.cluster.local")
    assert web["ejections"] == 1
    assert [e["ejected"] for e in web["endpoints"]].count(True) == 1


def test_breaker_overflow_is_503_with_the_reason(control_plane, processes):
    register(control_plane, processes, slow={"delay": 0.5})
    rule(control_plane, "{connectionPool: {http: {http2MaxRequests: 2}}}")
    routes(control_plane, "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}")
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    results: list[httpx.Response] = []

    def call() -> None:
        with sidecar.client() as client:
            results.append(client.get(f"{WEB}/"))

    threads = [threading.Thread(target=call) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(r.status_code for r in results)
    assert statuses.count(200) == 2
    assert statuses.count(503) == 4
    overflow = next(r for r in results if r.status_code == 503)
    assert overflow.headers["x-tulle-error"] == (
        "circuit open: max requests 2 reached (cluster outbound|8080||web.default.svc.cluster.local)"
    )


def test_abort_fault_30_percent(control_plane, processes):
    register(control_plane, processes, a={})
    routes(
        control_plane,
        """\
    - fault: {abort: {httpStatus: 503, percentage: {value: 30}}}
      route: [{destination: {host: web}}]""",
    )
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client:
        responses = [client.get(f"{WEB}/") for _ in range(1000)]
    aborted = [r for r in responses if r.status_code == 503]
    assert 0.25 <= len(aborted) / 1000 <= 0.35
    assert {r.headers["x-tulle-error"] for r in aborted} == {"fault injected: abort"}
