"""Each engine mechanism, observed from outside the stack (status, headers, reasons, which
endpoint served): Tulle's Fallback. A failed request
falls back after its retries, what does not fall back, and an unavailable service."""

from __future__ import annotations

import pytest

from tests.engine.conftest import (
    Upstreams,
    build_engine,
    handle,
    request,
    run,
    status,
    workload,
)
from tests.engine.outbound_config import (
    TABLE,
    vs,
)

pytestmark = pytest.mark.usefixtures("engine_path")


CACHE = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: cache}
spec:
  hosts: [cache.default.svc.cluster.local]
  ports: [{number: 8080, name: http, protocol: HTTP}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints: [{address: 10.0.0.9}]
---
"""


def fallback(when: str = "[5xx]") -> str:
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Fallback
metadata: {{name: web}}
spec:
  host: web
  to: {{host: cache}}
  when: {when}
---
"""


def test_a_failed_request_falls_back_after_its_retries():
    config = (
        workload("v1")
        + CACHE
        + fallback()
        + vs("""\
    - route: [{destination: {host: web}}]
      retries: {attempts: 1, retryOn: 5xx}""")
    )
    upstreams = Upstreams({"10.0.0.1:8080": status(503)})
    engine = build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams)
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.upstream) == (200, "10.0.0.9:8080")
    assert response.cluster == "outbound|8080||cache.default.svc.cluster.local"
    assert upstreams.calls == ["10.0.0.1:8080", "10.0.0.1:8080", "10.0.0.9:8080"]


def test_what_does_not_fall_back():
    config = (
        workload("v1")
        + CACHE
        + fallback("[unavailable]")
        + vs("""\
    - match: [{headers: {x-abort: {exact: "1"}}}]
      fault: {abort: {httpStatus: 503, percentage: {value: 100}}}
      route: [{destination: {host: web}}]
    - route: [{destination: {host: web}}]""")
    )
    upstreams = Upstreams({"10.0.0.1:8080": status(503)})
    engine = build_engine(config, {"v1": [("10.0.0.1", 8080)]}, upstreams)
    aborted = run(handle(engine, TABLE, request(headers=[("x-abort", "1")])))
    assert (aborted.status, aborted.flag) == (503, "FI")  # a fault is an answer, not a failure
    failed = run(handle(engine, TABLE, request()))
    assert (failed.status, failed.upstream) == (503, "10.0.0.1:8080")  # 5xx is not "unavailable"
    assert "10.0.0.9:8080" not in upstreams.calls


def test_an_unavailable_service_falls_back():
    config = (
        workload("v1")
        + CACHE
        + fallback("[unavailable]")
        + vs("    - route: [{destination: {host: web}}]")
    )
    upstreams = Upstreams()
    engine = build_engine(config, {}, upstreams)  # web has no endpoint at all
    response = run(handle(engine, TABLE, request()))
    assert (response.status, response.upstream) == (200, "10.0.0.9:8080")
