"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served): faults, timeouts and limits.
Abort and delay faults, route timeouts, gRPC clients' deadlines, and the local rate limit."""

from __future__ import annotations

import pytest

from tests.engine.conftest import (
    Clock,
    Upstreams,
    build_engine,
    handle,
    request,
    run,
    workload,
)
from tests.engine.outbound_config import (
    TABLE,
    many,
    vs,
)
from tulle.engine.message import Request
from tulle.engine.outbound import Engine, grpc_timeout

pytestmark = pytest.mark.usefixtures("engine_path")


def test_abort_fault_percentage():
    config = workload("v1") + vs("""\
    - fault: {abort: {httpStatus: 418, percentage: {value: 30}}}
      route: [{destination: {host: web}}]""")
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams())
    responses = run(many(engine, 20_000))
    aborted = [r for r in responses if r.status == 418]
    # Binomial(20000, 0.3): standard deviation 0.32%; ±3% is over nine of them.
    assert 0.27 <= len(aborted) / 20_000 <= 0.33
    assert {r.flag for r in aborted} == {"FI"}


def _slow_endpoint(route_timeout: str, delay: float) -> Engine:
    """An engine whose route has ``route_timeout`` and whose one endpoint answers after
    ``delay`` seconds."""
    config = workload("v1") + vs(f"""\
    - route: [{{destination: {{host: web}}}}]
      timeout: {route_timeout}""")
    upstreams = Upstreams(delay={"10.0.0.1:80": delay})
    return build_engine(config, {"v1": [("10.0.0.1", 80)]}, upstreams)


def test_delay_fault_and_route_timeout():
    engine = _slow_endpoint("50ms", 1.0)
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.flag) == (504, "UT")
    assert "request timeout 0.05s exceeded" in (response.header("x-tulle-error") or "")


def _grpc_call(deadline: str) -> Request:
    headers = [("content-type", "application/grpc"), ("grpc-timeout", deadline)]
    return Request("POST", "/helloworld.Greeter/SayHello", "web:8080", headers, b"", http2=True)


def test_a_grpc_clients_deadline_ends_the_call_when_it_comes_first():
    engine = _slow_endpoint("5s", 0.3)
    expired = run(handle(engine, TABLE, _grpc_call("50m")))
    assert (expired.status, expired.flag, expired.header("grpc-status")) == (200, "UT", "4")
    assert expired.header("x-tulle-error") == (
        "grpc-timeout 0.05s exceeded (cluster outbound|8080||web.default.svc.cluster.local)"
    )
    # A deadline past the answer, or one that is not the protocol's form, changes nothing.
    for deadline in ("2S", "5x", "123456789m"):
        assert run(handle(engine, TABLE, _grpc_call(deadline))).status == 200


def test_grpc_timeout_values():
    assert [grpc_timeout(v) for v in ("1H", "2M", "3S", "250m", "7u", "9n", "99999999S")] == (
        pytest.approx([3600.0, 120.0, 3.0, 0.25, 7e-6, 9e-9, 99999999.0])
    )
    assert [grpc_timeout(v) for v in (None, "", "S", "1s", "-1S", "1.5S", "٣S", "123456789S")] == [
        None
    ] * 8


def test_rate_limit_bucket():
    config = (
        workload("v1")
        + vs("""\
    - name: all
      route: [{destination: {host: web}}]""")
        + """\
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: web-out}
spec:
  target: {host: web}
  limit: {requests: 2, unit: second, burst: 3}
"""
    )
    clock = Clock()
    engine = build_engine(config, {"v1": [("10.0.0.1", 80)]}, Upstreams(), clock)
    first = run(many(engine, 5))
    assert [r.status for r in first] == [200, 200, 200, 429, 429]
    assert first[3].header("x-tulle-error") == "rate limited by outbound_default_web-out"
    clock.now += 1
    assert [r.status for r in run(many(engine, 3))] == [200, 200, 429]
