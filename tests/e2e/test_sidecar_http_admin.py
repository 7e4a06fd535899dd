"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. The admin listener: metrics and the config dump, drain and
quit."""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import (
    register,
)
from tests.e2e.sidecar_admin import admin_post
from tests.e2e.sidecar_http import (
    WEB,
)


def test_metrics_and_config_dump(control_plane, processes):
    port = processes.http_backend("a")
    control_plane.register(
        service="web", address="127.0.0.1", port=port, servicePort=8080, workload="web-v1"
    )
    sidecar = processes.sidecar(control_plane, pod="shop-frontend-0")
    with sidecar.client() as client:
        for _ in range(3):
            client.get(f"{WEB}/")
        client.get("http://nowhere:1/")
    metrics = sidecar.admin("/stats/prometheus").text
    assert (
        'tulle_requests_total{connection_security_policy="unknown",'
        'destination_principal="unknown",destination_service="web.default.svc.cluster.local",'
        'destination_workload="web-v1",reporter="source",response_code="200",'
        'response_flags="-",source_principal="unknown",source_workload="shop-frontend"} 3.0'
    ) in metrics
    assert 'response_code="404",response_flags="NR"' in metrics
    assert "tulle_request_duration_milliseconds_bucket" in metrics
    dump = sidecar.admin("/config_dump").json()
    assert dump["connected"] is True
    assert "http_proxy" in [r["name"] for r in dump["resources"]["routes"]]


def test_drain_and_quit_over_admin(control_plane, processes):
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    drained = admin_post(sidecar, "/drain")
    assert drained.status_code == 200
    assert sidecar.admin("/ready").status_code == 503  # draining: not ready for new traffic
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sidecar.proxy_url}/", timeout=5)  # the traffic listener no longer accepts
    quit_reply = admin_post(sidecar, "/quitquitquit")
    assert quit_reply.status_code == 200
    assert sidecar.proc.wait(10) == 0
