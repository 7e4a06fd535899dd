"""The sidecar's health listener (``tulle proxy --health-port``): a real sidecar process with
the app's original probes in ``TULLE_APP_PROBERS`` (as ``tulle inject`` writes them), and a real
app on loopback. ``/app-health/<container>/<probe>`` performs the probe against the app: 200
when it answers 200-399, 503 with the reason when it answers 500, refuses the connection or does
not answer in time, 404 for a probe the sidecar was not given; ``/ready`` is the sidecar's own
readiness (200 once it has config from a real control plane). Read-only: GET only, nothing of
the stats or admin listeners."""

from __future__ import annotations

import json
import re
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, _stop, start_control_plane, wait_until
from tests.tls_material import make_material

NODE = "sidecar~127.0.0.1~web-0.default~default.svc.cluster.local"


class App(BaseHTTPRequestHandler):
    """The app: /healthz 200, /broken 500, /moved 302, /needs-header 200 only with the probe's
    header (as the pod spec's httpHeaders); records what it was asked."""

    seen: list[tuple[str, str]] = []  # noqa: RUF012 - one app per module

    def do_GET(self) -> None:
        App.seen.append((self.path, self.headers.get("user-agent", "")))
        status = {"/healthz": 200, "/broken": 500, "/moved": 302}.get(self.path, 404)
        if self.path == "/needs-header":
            status = 200 if self.headers.get("x-probe") == "kubelet" else 401
        self.send_response(status)
        self.send_header("content-length", "0")
        if status == 302:
            self.send_header("location", "/healthz")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Pod:
    health: str
    said: str
    app_port: int
    silent_port: int
    closed_port: int


def probe(port: int, path: str, timeout: int = 1, **extra: object) -> dict[str, object]:
    return {"httpGet": {"path": path, "port": port, "scheme": "HTTP", **extra},
            "timeoutSeconds": timeout}  # fmt: skip


@pytest.fixture(scope="module")
def pod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pod]:
    tmp = tmp_path_factory.mktemp("health")
    (tmp / "config").mkdir()
    (tmp / "tls").mkdir()
    backend = make_material(tmp / "tls").backend
    app = ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    silent = socket.create_server(("127.0.0.1", 0))  # accepts (backlog), never answers
    closed = socket.create_server(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    port, silent_port = app.server_address[1], silent.getsockname()[1]
    # The same app over TLS, with a certificate the kubelet (and the sidecar) does not check.
    tls_app = ThreadingHTTPServer(("127.0.0.1", 0), App)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(backend.cert, backend.key)
    tls_app.socket = context.wrap_socket(tls_app.socket, server_side=True)
    threading.Thread(target=tls_app.serve_forever, daemon=True).start()
    probers = {
        "/app-health/web/livez": probe(port, "/healthz"),
        "/app-health/web/readyz": probe(port, "/broken"),
        "/app-health/web/startupz": probe(port, "/moved"),
        "/app-health/headers/readyz": probe(
            port, "/needs-header", httpHeaders=[{"name": "X-Probe", "value": "kubelet"}]
        ),
        "/app-health/silent/livez": probe(silent_port, "/healthz"),
        "/app-health/gone/livez": probe(closed_port, "/healthz"),
        "/app-health/tls/readyz": probe(tls_app.server_address[1], "/healthz", scheme="HTTPS"),
    }
    plane = start_control_plane(tmp / "state", tmp / "config")
    proc = subprocess.Popen(
        [str(BIN / "tulle"), "proxy", "--xds", f"127.0.0.1:{plane.xds_port}", "--node-id", NODE,
         "--admin-port", "0", "--health-port", "0",
         "--admin-token-file", str(tmp / "run" / "admin-token")],
        env={"TULLE_APP_PROBERS": json.dumps(probers), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()
        found = re.search(r"health 127\.0\.0\.1:(\d+)", said)
        assert found, said
        yield Pod(f"http://127.0.0.1:{found[1]}", said, port, silent_port, closed_port)
    finally:
        _stop(proc)
        _stop(plane.proc)
        for server in (app, tls_app):
            server.shutdown()
            server.server_close()
        silent.close()


def get(pod: Pod, path: str) -> httpx.Response:
    return httpx.get(pod.health + path, timeout=10)


def test_ready_is_the_sidecars_readiness(pod: Pod) -> None:
    wait_until(lambda: get(pod, "/ready").status_code == 200, timeout=30)
    assert get(pod, "/ready").text == "LIVE\n"


def test_an_app_probe_answered_200_or_a_redirect_passes(pod: Pod) -> None:
    App.seen.clear()
    answer = get(pod, "/app-health/web/livez")
    assert (answer.status_code, answer.text) == (200, "OK\n")
    assert App.seen == [("/healthz", "kube-probe/tulle")]  # performed now, against the app
    assert get(pod, "/app-health/web/startupz").status_code == 200  # 302: the kubelet's success


def test_an_app_probe_the_app_fails_is_503_with_the_reason(pod: Pod) -> None:
    answer = get(pod, "/app-health/web/readyz")
    assert answer.status_code == 503
    assert answer.text == f"http://127.0.0.1:{pod.app_port}/broken: answered 500\n"


def test_the_probes_headers_are_sent(pod: Pod) -> None:
    assert get(pod, "/app-health/headers/readyz").status_code == 200


def test_an_https_probe_is_made_over_tls_without_a_certificate_check(pod: Pod) -> None:
    App.seen.clear()
    answer = get(pod, "/app-health/tls/readyz")
    assert (answer.status_code, answer.text) == (200, "OK\n")
    assert App.seen == [("/healthz", "kube-probe/tulle")]


def test_an_app_that_refuses_or_does_not_answer_is_503(pod: Pod) -> None:
    refused = get(pod, "/app-health/gone/livez")
    assert refused.status_code == 503
    assert f"127.0.0.1:{pod.closed_port}/healthz" in refused.text
    silent = get(pod, "/app-health/silent/livez")
    assert (silent.status_code, silent.text) == (
        503, f"http://127.0.0.1:{pod.silent_port}/healthz: no answer within 1s\n"
    )  # fmt: skip


def test_unknown_probes_and_other_paths_are_404_and_only_get_is_served(pod: Pod) -> None:
    for path in ("/app-health/web/unknown", "/app-health/other/livez", "/stats/prometheus",
                 "/config_dump", "/quitquitquit", "/"):  # fmt: skip
        assert get(pod, path).status_code == 404, path
    refused = httpx.post(pod.health + "/ready", timeout=10)
    assert refused.status_code == 405
    assert refused.headers["allow"] == "GET"
    assert get(pod, "/ready").status_code == 200  # still there


def test_bad_probers_are_refused_at_start(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "tulle"), "proxy", "--node-id", NODE, "--health-port", "0"],
        env={"TULLE_APP_PROBERS": '{"/app-health/web/livez": {"httpGet": {"port": "http"}}}',
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "error: --app-probers (TULLE_APP_PROBERS): /app-health/web/livez: httpGet.port 'http' "
        "is not a port number"
    )


def hook(*args: str) -> subprocess.CompletedProcess[str]:
    """A lifecycle hook of the injected sidecar container, as the kubelet runs it."""
    return subprocess.run([str(BIN / "tulle"), *args], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip


def test_proxy_wait_returns_once_the_sidecar_is_ready(pod: Pod) -> None:
    port = pod.health.rsplit(":", 1)[1]
    result = hook("proxy-wait", "--health-port", port, "--timeout", "60")
    assert (result.returncode, result.stderr) == (0, "")


def test_proxy_wait_fails_with_the_reason_and_proxy_drain_drains(tmp_path: Path) -> None:
    """A sidecar with no control plane is not ready: the postStart hook gives up after its
    timeout saying why; the preStop hook drains it with its admin token."""
    token_file = tmp_path / "run" / "admin-token"
    proc = subprocess.Popen(
        [str(BIN / "tulle"), "proxy", "--xds", "127.0.0.1:9", "--node-id", NODE,
         "--admin-port", "0", "--health-port", "0", "--admin-token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline()
        admin = re.search(r"admin 127\.0\.0\.1:(\d+)", said)
        health = re.search(r"health 127\.0\.0\.1:(\d+)", said)
        assert admin, said
        assert health, said
        waited = hook("proxy-wait", "--health-port", health[1], "--timeout", "0.5")
        assert waited.returncode == 1
        assert waited.stderr.strip() == (
            f"error: the sidecar at http://127.0.0.1:{health[1]}/ready is not ready after "
            "0.5s: 503 waiting for config from the control plane"
        )
        drained = hook("proxy-drain", "--admin-port", admin[1],
                       "--admin-token-file", str(token_file))  # fmt: skip
        assert (drained.returncode, drained.stdout, drained.stderr) == (0, "draining\n", "")
        ready = httpx.get(f"http://127.0.0.1:{health[1]}/ready", timeout=10)
        assert (ready.status_code, ready.text) == (503, "DRAINING\n")
        wrong = hook("proxy-drain", "--admin-port", admin[1],
                     "--admin-token-file", str(tmp_path / "missing"))  # fmt: skip
        assert (wrong.returncode, wrong.stderr.strip()) == (
            1, f"error: admin token file {tmp_path / 'missing'}: No such file or directory"
        )  # fmt: skip
    finally:
        _stop(proc)
