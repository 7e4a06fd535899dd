"""Every engine behaviour as a scenario — this config, these backends, these requests, this
outcome — run through a sidecar, through the library and through proxyless gRPC (the ``mode``
fixture). The expected outcome is written once; a mode that behaves differently fails. Where
grpcio deliberately differs (it is not ours to change), the scenario asserts what grpcio does,
and docs/library.md lists it in the mode x feature table."""

from __future__ import annotations

import collections
import threading
import time

from tests.e2e.conftest import ControlPlane, free_port, synced, wait_until
from tests.manifests import destination_rule, virtual_service
from tests.scenarios.conftest import Caller, Outcome, get_all, get_concurrently

WEB = "http://web:8080"
CLUSTER = "outbound|8080||web.default.svc.cluster.local"


def apply(plane: ControlPlane, http: str, traffic_policy: str = "{}", extra: str = "") -> None:
    subsets = "  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]"
    plane.apply(virtual_service(http) + destination_rule(traffic_policy, subsets) + extra)


def test_header_routing_and_no_route(control_plane, serve, caller_for, mode):
    serve(a={"version": "v1"}, b={"version": "v2"})
    apply(
        control_plane,
        """\
    - match: [{headers: {x-user: {exact: jason}}}]
      route: [{destination: {host: web, subset: v2}}]
    - route: [{destination: {host: web, subset: v1}}]""",
    )
    caller: Caller = caller_for()
    assert caller.get(f"{WEB}/", {"x-user": "jason"}).backend == "b"
    assert caller.get(f"{WEB}/").backend == "a"
    nowhere = caller.get("http://nowhere:1/x", timeout=2)
    if mode == "proxyless":  # gap: grpcio waits for a listener it never got, until the deadline
        assert nowhere == Outcome(504, "-", "Deadline Exceeded")
    else:
        assert nowhere == Outcome(404, "-", "no route for nowhere:1/x")


def test_split_80_20(control_plane, serve, caller_for, mode):
    serve(a={"version": "v1"}, b={"version": "v2"})
    apply(
        control_plane,
        """\
    - route:
        - {destination: {host: web, subset: v1}, weight: 80}
        - {destination: {host: web, subset: v2}, weight: 20}""",
    )
    counts = collections.Counter(o.backend for o in get_all(caller_for(), f"{WEB}/", 2000))
    assert counts["a"] + counts["b"] == 2000
    assert 0.16 <= counts["b"] / 2000 <= 0.24  # 20% ± 4.5 standard deviations (0.89% each)


def test_retries_hide_a_half_failing_backend(control_plane, serve, caller_for, mode):
    serve(good={}, flaky={"fail_rate": 0.5})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 3, retryOn: '5xx,unavailable'}",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 400)
    # A retry goes to the other endpoint (previous hosts; grpcio's round robin moves on), which
    # never fails: no failure is expected. (Were the four attempts independent, 0.25^4 = 0.4%:
    # mean 1.6, sd = sqrt(400 * 0.0039 * 0.996) = 1.25 calls, and 1% would be only 2 sd.)
    assert sum(o.status == 200 for o in outcomes) / 400 >= 0.99


def test_a_bad_endpoint_is_ejected(control_plane, serve, caller_for, mode):
    serve(a={}, b={}, bad={"fail_rate": 1.0})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}",
        "{loadBalancer: {simple: ROUND_ROBIN}, outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 50}}",
    )
    caller = caller_for()
    first = [o.backend for o in get_all(caller, f"{WEB}/", 12)]
    later = [o.backend for o in get_all(caller, f"{WEB}/", 42)]
    if mode == "proxyless":  # gap: grpcio ejects on success rate only, not consecutive errors
        assert later.count("bad") >= 10  # still its round-robin third (14 of 42)
        return
    assert first.count("bad") == 3  # three failures, then ejected
    assert "bad" not in later


def test_breaker_overflow_is_503_with_the_reason(control_plane, serve, caller_for, mode):
    serve(slow={"delay": 0.5})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}",
        "{connectionPool: {http: {http2MaxRequests: 2}}}",
    )
    caller = caller_for()
    results = get_concurrently(caller, f"{WEB}/", 6)
    assert sorted(o.status for o in results) == [200, 200, 503, 503, 503, 503]
    reason = f"circuit open: max requests 2 reached (cluster {CLUSTER})"
    if mode == "proxyless":  # grpcio words its own errors
        reason = "circuit breaker drop"
    assert {o.reason for o in results if o.status == 503} == {reason}


def test_abort_fault_30_percent(control_plane, serve, caller_for, mode):
    serve(a={})
    apply(
        control_plane,
        """\
    - fault: {abort: {httpStatus: 503, percentage: {value: 30}}}
      route: [{destination: {host: web}}]""",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 1200)
    aborted = [o for o in outcomes if o.status == 503]
    assert 0.24 <= len(aborted) / 1200 <= 0.36  # 30% ± 4.5 standard deviations (1.3% each)
    reason = "Fault injected" if mode == "proxyless" else "fault injected: abort"
    assert {o.reason for o in aborted} == {reason}


def test_route_timeout_is_504_with_the_reason(control_plane, serve, caller_for, mode):
    serve(slow={"delay": 1.0})
    apply(control_plane, "    - route: [{destination: {host: web}}]\n      timeout: 0.2s")
    outcome = caller_for().get(f"{WEB}/")
    if mode == "proxyless":  # grpcio words its own errors
        assert outcome == Outcome(504, "-", "Deadline Exceeded")
    else:
        assert outcome == Outcome(504, "-", f"request timeout 0.2s exceeded (cluster {CLUSTER})")


def test_outbound_rate_limit_is_429_with_the_reason(control_plane, serve, caller_for, mode):
    serve(a={})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]",
        extra="""\
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: web-out}
spec:
  target: {host: web}
  limit: {requests: 1, unit: minute, burst: 3}
""",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 5)
    if mode == "proxyless":  # gap: grpcio has no local rate limit filter (the control plane
        assert [o.status for o in outcomes] == [200] * 5  # leaves it out for proxyless nodes)
        return
    assert [o.status for o in outcomes] == [200, 200, 200, 429, 429]
    assert outcomes[-1].reason.startswith("rate limited by ")


def test_every_kind_of_match(control_plane, serve, caller_for, mode):
    serve(a={"version": "v1"}, b={"version": "v2"})
    apply(
        control_plane,
        """\
    - match: [{uri: {exact: /shop.Cart/Get}}, {uri: {regex: "/shop.Cart/Item[0-9]+"}},
              {uri: {prefix: /shop.Orders/}}]
      route: [{destination: {host: web, subset: v2}}]
    - match: [{headers: {x-tier: {prefix: gold}}}, {headers: {x-id: {regex: "[0-9]{3}"}}}]
      route: [{destination: {host: web, subset: v2}}]
    - match: [{queryParams: {beta: {exact: "1"}}}]
      route: [{destination: {host: web, subset: v2}}]
    - route: [{destination: {host: web, subset: v1}}]""",
    )
    caller = caller_for()
    # Paths shaped as gRPC methods (/service/method): grpcio drops exact-path matchers that are
    # not, so the same scenario holds in every mode.
    to_v2 = ["/shop.Cart/Get", "/shop.Cart/Item42", "/shop.Orders/List", "/shop.Orders/"]
    to_v1 = ["/shop.Cart/GetAll", "/shop.Cart/ItemX", "/shop.Order/List", "/"]
    assert [caller.get(f"{WEB}{path}").backend for path in to_v2] == ["b"] * 4
    assert [caller.get(f"{WEB}{path}").backend for path in to_v1] == ["a"] * 4
    assert caller.get(f"{WEB}/", {"x-tier": "gold-plus"}).backend == "b"
    assert caller.get(f"{WEB}/", {"x-tier": "silver"}).backend == "a"
    assert caller.get(f"{WEB}/", {"x-id": "123"}).backend == "b"
    assert caller.get(f"{WEB}/", {"x-id": "12"}).backend == "a"
    if mode != "proxyless":  # a gRPC call has no query string
        assert caller.get(f"{WEB}/q?beta=1").backend == "b"
        assert caller.get(f"{WEB}/q?beta=2").backend == "a"


def test_rewrite_and_header_edits(control_plane, serve, caller_for, mode):
    serve(a={})
    apply(
        control_plane,
        """\
    - match: [{uri: {prefix: /old/}}]
      rewrite: {uri: /new/}
      headers:
        request: {set: {x-set: "yes"}, remove: [x-secret]}
        response: {add: {x-route: old}, remove: [x-backend-version]}
      route: [{destination: {host: web}}]""",
    )
    outcome = caller_for().get(f"{WEB}/old/items", {"x-secret": "s3cret"})
    assert outcome.backend == "a"
    if mode == "proxyless":  # gap: grpcio applies neither rewrites nor header edits
        assert outcome.path == "/old/items"
        assert outcome.sent.get("x-secret") == "s3cret"
        assert "x-set" not in outcome.sent
        assert "x-route" not in outcome.headers
        return
    assert outcome.path == "/new/items"
    assert outcome.sent.get("x-set") == "yes"
    assert "x-secret" not in outcome.sent
    assert outcome.headers.get("x-route") == "old"


def test_redirect(control_plane, serve, caller_for, mode):
    serve(a={})
    apply(
        control_plane,
        """\
    - match: [{uri: {prefix: /moved}}]
      redirect: {uri: /new, redirectCode: 308}
    - route: [{destination: {host: web}}]""",
    )
    outcome = caller_for().get(f"{WEB}/moved")
    if mode == "proxyless":  # gap: grpcio fails a call whose route redirects
        assert outcome.status == 503
        assert "inappropriate action" in outcome.reason.lower()
        return
    assert (outcome.status, outcome.backend) == (308, "-")
    assert outcome.headers["location"] == "http://web:8080/new"


def test_mirroring_sends_a_copy(control_plane, serve, caller_for, mode):
    backends = serve(main={"version": "v1"}, shadow={"version": "v2"})
    apply(
        control_plane,
        """\
    - route: [{destination: {host: web, subset: v1}}]
      mirror: {host: web, subset: v2}
      mirrorPercentage: {value: 100}""",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 10)
    assert {o.backend for o in outcomes} == {"main"}  # callers see the main answer only
    if mode == "proxyless":  # gap: grpcio does not mirror
        assert backends.count("shadow") == 0
        return
    wait_until(lambda: backends.count("shadow") == 10)  # fire and forget: they may lag


def test_ring_hash_on_a_header_keeps_each_user_on_one_backend(
    control_plane, serve, caller_for, mode
):
    serve(a={}, b={}, c={}, d={})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]",
        "{loadBalancer: {consistentHash: {httpHeaderName: x-user}}}",
    )
    caller = caller_for()
    chosen = {}
    for user in [f"user-{i}" for i in range(12)]:
        backends = {caller.get(f"{WEB}/", {"x-user": user}).backend for _ in range(5)}
        assert len(backends) == 1, (user, backends)
        chosen[user] = backends.pop()
    assert len(set(chosen.values())) >= 2  # 12 users on one of 4 backends: 4^-11 by chance


def test_least_request_avoids_a_slow_backend(control_plane, serve, caller_for, mode):
    serve(fast={}, slow={"delay": 0.3})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]",
        "{loadBalancer: {simple: LEAST_REQUEST}}",
    )
    caller = caller_for()
    results: list[Outcome] = []

    def call_repeatedly() -> None:
        results.extend(get_all(caller, f"{WEB}/", 10))

    threads = [threading.Thread(target=call_repeatedly) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    slow = sum(o.backend == "slow" for o in results)
    if mode == "proxyless":  # gap: the control plane sends grpcio round robin instead
        assert slow >= 15  # round robin's half (20 of 40), give or take the interleaving
        return
    # Power of two choices: the slow backend, busy with a request, loses every comparison
    # with the idle fast one; round robin would give it 20 of 40.
    assert slow <= 10


def test_fault_delay(control_plane, serve, caller_for, mode):
    serve(a={})
    apply(
        control_plane,
        """\
    - match: [{headers: {x-slow: {exact: "1"}}}]
      fault: {delay: {fixedDelay: 0.4s, percentage: {value: 100}}}
      route: [{destination: {host: web}}]
    - route: [{destination: {host: web}}]""",
    )
    caller = caller_for()
    began = time.monotonic()
    outcome = caller.get(f"{WEB}/", {"x-slow": "1"})
    waited = time.monotonic() - began
    assert outcome.backend == "a"
    assert waited >= 0.4  # the delay is the behaviour under test, a lower bound


def test_per_try_timeout_moves_on_to_another_endpoint(control_plane, serve, caller_for, mode):
    serve(fast={}, stuck={"delay": 3.0})
    apply(
        control_plane,
        """\
    - route: [{destination: {host: web}}]
      retries: {attempts: 2, perTryTimeout: 0.3s, retryOn: "5xx,unavailable,deadline-exceeded"}
      timeout: 2s""",
        "{loadBalancer: {simple: ROUND_ROBIN}}",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 6)
    if mode == "proxyless":  # gap: grpcio has no per-try timeout; the route timeout ends the call
        assert {o.status for o in outcomes} == {200, 504}
        assert {o.reason for o in outcomes if o.status == 504} == {"Deadline Exceeded"}
        return
    assert [o.backend for o in outcomes] == ["fast"] * 6


def test_retry_budget_keeps_retries_from_multiplying_an_outage(
    control_plane, serve, caller_for, mode
):
    # The 20 first attempts are held at the backend until all 20 are there: the budget is
    # about requests in flight together, which a loaded machine could otherwise stagger.
    backends = serve(down={"fail_rate": 1.0, "delay": 0.2, "gather": 20})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n"
        "      retries: {attempts: 5, retryOn: '5xx,unavailable'}",
    )
    caller = caller_for()
    results = get_concurrently(caller, f"{WEB}/", 20)
    assert {o.status for o in results} == {503}
    calls = backends.count("down")
    if mode == "proxyless":  # gap: grpcio has no retry budget; it caps attempts at 5
        assert calls == 20 * 5
        return
    # Without a budget: 20 requests x 6 attempts = 120 calls. The budget keeps retries in
    # flight to 20% of the requests in flight (at least 3).
    assert calls <= 60


def test_connection_and_pending_limits_overflow_with_the_reason(
    control_plane, serve, caller_for, mode
):
    serve(slow={"delay": 0.5})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}",
        "{connectionPool: {tcp: {maxConnections: 1}, http: {http1MaxPendingRequests: 1}}}",
    )
    caller = caller_for()
    results = get_concurrently(caller, f"{WEB}/", 5)
    if mode == "proxyless":  # gap: grpcio enforces only maxRequests (http2MaxRequests)
        assert [o.status for o in results] == [200] * 5
        return
    # One request on the one connection, one waiting for it; the other three overflow.
    assert sorted(o.status for o in results) == [200, 200, 503, 503, 503]
    reason = f"circuit open: max pending requests 1 reached (cluster {CLUSTER})"
    assert {o.reason for o in results if o.status == 503} == {reason}


def test_fallback_to_another_service_when_this_one_fails(control_plane, serve, caller_for, mode):
    serve(down={"fail_rate": 1.0})
    serve(service="cache", spare={})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 1, retryOn: 5xx}",
        extra="""\
apiVersion: tulle.dev/v1alpha1
kind: Fallback
metadata: {name: web}
spec:
  host: web
  to: {host: cache}
""",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 5)
    if mode == "proxyless":  # gap: grpcio ignores the fallback (route metadata it does not read)
        assert {(o.status, o.backend) for o in outcomes} == {(503, "down")}
        return
    assert {(o.status, o.backend) for o in outcomes} == {(200, "spare")}


def test_random_balancing_and_hash_keys_from_query_and_cookie(
    control_plane, serve, caller_for, mode
):
    serve(a={}, b={}, c={})
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]",
        "{loadBalancer: {simple: RANDOM}}",
    )
    caller = caller_for()
    spread = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/", 90))
    # Each of three at 1/3: one missing by chance is 3 * (2/3)^90 = 4e-16 (each count has mean
    # 30, sd = sqrt(90 * 1/3 * 2/3) = 4.5: none is 6.7 sd below).
    assert set(spread) == {"a", "b", "c"}
    for key in ("{httpQueryParameterName: user}", "{httpCookie: {name: user, ttl: 0s}}"):
        apply(control_plane, "    - route: [{destination: {host: web}}]",
              f"{{loadBalancer: {{consistentHash: {key}}}}}")  # fmt: skip
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)  # grpcio's too
        seen = {}
        for user in [f"u{i}" for i in range(8)]:
            url = f"{WEB}/?user={user}" if "Query" in key else f"{WEB}/"
            cookie = {} if "Query" in key else {"cookie": f"user={user}"}
            seen[user] = {caller.get(url, cookie).backend for _ in range(4)}
        if mode == "proxyless":  # gap: grpcio hashes on headers only; these keys are ignored
            assert any(len(backends) > 1 for backends in seen.values())
        else:
            assert all(len(backends) == 1 for backends in seen.values()), seen


def test_connect_failures_are_retried_on_another_endpoint(control_plane, serve, caller_for, mode):
    serve(live={})
    dead = free_port()  # registered, nothing listens
    control_plane.register(service="web", address="127.0.0.1", port=dead, servicePort=8080,
                           protocol="GRPC" if mode == "proxyless" else "HTTP")  # fmt: skip
    apply(
        control_plane,
        "    - route: [{destination: {host: web}}]\n"
        "      retries: {attempts: 2, retryOn: 'connect-failure,unavailable'}",
        "{loadBalancer: {simple: ROUND_ROBIN}}",
    )
    outcomes = get_all(caller_for(), f"{WEB}/", 10)
    assert {(o.status, o.backend) for o in outcomes} == {(200, "live")}
