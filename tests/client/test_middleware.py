"""Library mode's inbound side: ``tulle.client.asgi.MeshMiddleware`` (the example app under
uvicorn, a real process) and ``tulle.client.wsgi.MeshMiddleware`` (under the standard library's
wsgiref server) against a real control plane: the port's inbound policy, the callee's metrics and
access log, and the endpoint registered while the app runs."""

from __future__ import annotations

import json
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
from prometheus_client import generate_latest

import tulle.client
from tests.e2e.conftest import (
    WORKLOAD,
    ControlPlane,
    _stop,
    free_port,
    start_control_plane,
    synced,
    wait_until,
)
from tulle.client.wsgi import MeshMiddleware
from tulle.security.tokens import BootstrapTokens

POLICY = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  command: [{name}]
  ports: [{{name: http, port: 8080}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: deny-admin}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  action: DENY
  rules:
    - to: [{{operation: {{paths: ["/admin*"]}}}}]
---
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {{name: {name}-in}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  limit: {{requests: 1, unit: minute, burst: 3}}
"""


@pytest.fixture(autouse=True)
def stop_the_runtime():
    yield
    tulle.client.shutdown()


ENDPOINT = "echo.default.svc.cluster.local|127.0.0.1:8080"


def endpoint_ids(plane: ControlPlane) -> set[str]:
    items = httpx.get(f"{plane.api}/api/v1/endpoints", headers=plane.auth, timeout=10).json()[
        "items"
    ]
    return {item["id"] for item in items}


def test_asgi_app_gets_inbound_policy_metrics_and_registration(control_plane, processes, tmp_path):
    control_plane.apply(POLICY.format(name="hello"))
    log = tmp_path / "hello.log"
    app = processes.library_app(control_plane, "hello-0", "hello", log)
    endpoint = f"hello.default.svc.cluster.local|127.0.0.1:{app.port}"
    wait_until(lambda: endpoint in endpoint_ids(control_plane))
    wait_until(lambda: synced(control_plane, app.node))

    admin = app.get("/admin/users")
    assert admin.status_code == 403
    assert admin.headers["x-tulle-error"] == "denied by policy default/deny-admin"
    # The policy sees the path normalized, as the sidecar's does (a raw socket: httpx would
    # normalize these itself).
    for tricky in (b"/%2e/admin/users", b"/x/../admin", b"/%61dmin"):
        with socket.create_connection(("127.0.0.1", app.port), timeout=10) as raw:
            raw.sendall(b"GET " + tricky + b" HTTP/1.1\r\nHost: hello\r\nConnection: close\r\n\r\n")
            reply = b""
            while chunk := raw.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 403 "), (tricky, reply[:200])
    answers = [app.get("/ok") for _ in range(4)]
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].json()["workload"] == "hello"
    assert answers[3].headers["x-tulle-error"] == "rate limited by inbound_8080_ratelimit"

    metrics = app.metrics()
    series = (
        'tulle_requests_total{{connection_security_policy="none",destination_principal="unknown",'
        'destination_service="hello.default.svc.cluster.local",'
        'destination_workload="hello",reporter="destination",response_code="{code}",'
        'response_flags="{flag}",source_principal="unknown",source_workload="unknown"}} {count}'
    )
    assert series.format(code=200, flag="-", count="3.0") in metrics
    assert series.format(code=429, flag="RL", count="1.0") in metrics
    assert series.format(code=403, flag="RBAC", count="4.0") in metrics

    assert app.proc is not None
    app.proc.send_signal(signal.SIGTERM)  # uvicorn's lifespan shutdown deregisters
    # uvicorn shuts down gracefully, then re-raises the signal it caught (since 0.29).
    assert app.proc.wait(15) == -signal.SIGTERM
    assert endpoint not in endpoint_ids(control_plane)
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    refused = [e for e in entries if e["listener"] == "inbound" and e["status"] == 429]
    assert len(refused) == 1
    assert refused[0]["reason"] == "rate limited by inbound_8080_ratelimit"
    assert refused[0]["flags"] == "RL"


def echo(environ, start_response):
    """A WSGI app: reads the body and answers its length."""
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("content-type", "text/plain")])
    return [str(len(body)).encode()]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        return


class WsgiServer:
    """The standard library's WSGI server on a port of its own, serving ``app`` once set."""

    def __init__(self) -> None:
        self.port = free_port()
        self.app: Any = None
        self.server = make_server("127.0.0.1", self.port, self.serve, handler_class=QuietHandler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, environ, start_response):
        return self.app(environ, start_response)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def wsgi_server() -> Iterator[WsgiServer]:
    server = WsgiServer()
    yield server
    server.close()


def test_wsgi_app_gets_inbound_policy_metrics_and_registration(
    control_plane, wsgi_server, monkeypatch
):
    control_plane.apply(POLICY.format(name="echo"))
    monkeypatch.setenv("TULLE_TOKEN_FILE", str(control_plane.workload_token("echo", "echo-0")))
    node = "library~127.0.0.1~echo-0.default~default.svc.cluster.local"
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=node,
                           server=control_plane.api, access_log=False)  # fmt: skip
    tulle.client.wait_ready(10)
    wait_until(lambda: synced(control_plane, node))
    port = wsgi_server.port
    middleware = MeshMiddleware(echo, port=port, service="echo", labels={"version": "v1"})
    wsgi_server.app = middleware
    endpoint = f"echo.default.svc.cluster.local|127.0.0.1:{port}"
    assert endpoint in endpoint_ids(control_plane)  # registered when made

    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        denied = client.get("/admin")
        statuses = [client.post("/", content=b"hello").status_code for _ in range(4)]
        posted = client.post("/", content=b"hi")  # still limited: the burst is spent
    assert denied.status_code == 403
    assert denied.headers["x-tulle-error"] == "denied by policy default/deny-admin"
    assert statuses == [200, 200, 200, 429]
    assert posted.status_code == 429
    exposition = generate_latest(tulle.client.metrics_registry()).decode()
    labels = (
        'connection_security_policy="none",destination_principal="unknown",'
        'destination_service="echo.default.svc.cluster.local",destination_workload="echo",'
        'reporter="destination",response_code="200",response_flags="-",'
        'source_principal="unknown",source_workload="unknown"'
    )
    assert f"tulle_requests_total{{{labels}}} 3.0" in exposition
    assert f"tulle_request_bytes_total{{{labels}}} 15.0" in exposition  # the app read 3 x 5
    assert f"tulle_response_bytes_total{{{labels}}} 3.0" in exposition  # "5" three times

    middleware.close()
    assert endpoint not in endpoint_ids(control_plane)


def test_a_config_push_leaves_the_spent_rate_limit_spent(control_plane, wsgi_server):
    # Each push the library ACKs (here: an endpoint registered elsewhere in the mesh) rebuilds
    # the inbound policy; the bucket must keep its tokens (it used to start full again).
    control_plane.apply(POLICY.format(name="echo"))
    node = "library~127.0.0.1~echo-0.default~default.svc.cluster.local"
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=node,
                           server=control_plane.api, access_log=False)  # fmt: skip
    tulle.client.wait_ready(10)
    wsgi_server.app = MeshMiddleware(echo, port=wsgi_server.port, register=False)
    wait_until(lambda: synced(control_plane, node))
    with httpx.Client(base_url=f"http://127.0.0.1:{wsgi_server.port}", timeout=10) as client:
        assert [client.get("/").status_code for _ in range(4)] == [200, 200, 200, 429]
        runtime = tulle.client.get_runtime()
        before = runtime.config
        control_plane.register(service="echo", address="127.0.0.1", port=free_port(),
                               servicePort=8080)  # fmt: skip
        wait_until(lambda: runtime.config is not before)  # the push came and was taken
        assert client.get("/").status_code == 429


def test_registration_settings_name_what_is_wrong(control_plane, monkeypatch):
    node = "library~127.0.0.1~echo-0.default~default.svc.cluster.local"
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=node,
                           server=control_plane.api, access_log=False)  # fmt: skip
    monkeypatch.delenv("PORT", raising=False)
    with pytest.raises(tulle.client.SettingsError, match="PORT"):
        MeshMiddleware(echo, service="echo")
    monkeypatch.setenv("TULLE_LABELS", "version")
    with pytest.raises(tulle.client.SettingsError, match="TULLE_LABELS: 'version'"):
        MeshMiddleware(echo, service="echo", port=8080)
    # No service named: nothing to register, and the middleware still applies policy.
    monkeypatch.delenv("TULLE_SERVICE", raising=False)
    MeshMiddleware(echo, port=8080).close()


def test_registration_waits_for_the_control_plane(control_plane, tmp_path, monkeypatch):
    """Made while the control plane's API is away, the middleware registers once it answers."""
    node = "library~127.0.0.1~echo-0.default~default.svc.cluster.local"
    (tmp_path / "late").mkdir()
    (tmp_path / "late" / "echo.yaml").write_text(WORKLOAD.format(name="echo"))
    token = BootstrapTokens(tmp_path / "late-state").issue("default", "echo", "echo-0.default")
    monkeypatch.setenv("TULLE_TOKEN_FILE", str(token))
    api_port = free_port()
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=node,
                           server=f"http://127.0.0.1:{api_port}", access_log=False)  # fmt: skip
    middleware = MeshMiddleware(echo, port=8080, service="echo")
    assert not middleware.gate.registered
    late = start_control_plane(tmp_path / "late-state", tmp_path / "late", http_port=api_port)
    try:
        wait_until(lambda: middleware.gate.registered, timeout=15)  # set once POST answered
        assert ENDPOINT in endpoint_ids(late)
        middleware.close()
        assert ENDPOINT not in endpoint_ids(late)
    finally:
        middleware.close()  # idempotent; stops the retries if an assertion failed first
        _stop(late.proc)
