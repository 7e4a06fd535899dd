"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. Bodies streamed both ways: responses stream through,
large and chunked request bodies reach the upstream, and a client that hangs up has its request
cancelled."""

from __future__ import annotations

import hashlib
import json
import re
import socket

import httpx

from tests.e2e.conftest import (
    register,
    synced,
    wait_until,
)
from tests.e2e.sidecar_http import (
    WEB,
    routes,
)


def test_responses_stream_through(control_plane, processes):
    port = processes.http_backend("web")
    control_plane.register(service="web", address="127.0.0.1", port=port, servicePort=8080)
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with sidecar.client() as client, client.stream("GET", f"{WEB}/stream") as response:
        pieces = response.iter_raw()
        # The backend holds its second piece until /release: the first must arrive before it.
        assert next(pieces) == b"first"
        httpx.get(f"http://127.0.0.1:{port}/release", timeout=10)
        assert b"".join(pieces) == b"second"
    with sidecar.client() as client:
        big = client.get(f"{WEB}/big")
    assert big.content == bytes(range(256)) * (3 * 4096)
    # Streamed responses count in the metrics with every byte sent, as buffered ones do.
    metrics = sidecar.admin("/stats/prometheus").text
    sent = re.findall(
        r'^tulle_response_bytes_total\{.*response_code="200".*\} (\S+)$', metrics, re.M
    )
    assert sum(float(value) for value in sent) == len(b"firstsecond") + len(big.content)


def test_a_client_that_hangs_up_has_its_request_cancelled(control_plane, processes, tmp_path):
    # The client closes its connection before the (slow) answer: the request is cancelled, so
    # the cluster's count of requests in flight drops at once (the upstream connection is
    # closed), and the access log says the client went away.
    register(control_plane, processes, slow={"delay": 5.0})
    log = tmp_path / "access.log"
    sidecar = processes.sidecar(control_plane, log=log)
    wait_until(lambda: synced(control_plane, sidecar.node))

    def in_flight() -> int:
        return sum(c["requests"] for c in sidecar.admin("/clusters").json()["clusters"])

    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(b"GET http://web:8080/slow HTTP/1.1\r\nHost: web:8080\r\n\r\n")
        wait_until(lambda: in_flight() == 1)
    wait_until(lambda: in_flight() == 0, timeout=3)  # the backend would answer after 5 s
    wait_until(lambda: "client closed the connection" in log.read_text())
    entry = json.loads(log.read_text().splitlines()[-1])
    assert (entry["path"], entry["status"], entry["flags"]) == ("/slow", 0, "DC")


def test_large_and_chunked_request_bodies_stream_to_the_upstream(control_plane, processes):

    register(control_plane, processes, a={})
    routes(
        control_plane,
        "    - route: [{destination: {host: web}}]\n      retries: {attempts: 3, retryOn: 5xx}",
    )
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    payload = bytes(range(256)) * 12288  # 3 MiB: over the buffering limit
    with sidecar.client() as client:
        sized = client.post(f"{WEB}/upload", content=payload).json()

        def pieces():
            for start in range(0, len(payload), 65536):
                yield payload[start : start + 65536]

        chunked = client.post(f"{WEB}/upload", content=pieces()).json()  # no length: chunked
    for answer in (sized, chunked):
        assert answer["body_length"] == len(payload)
        assert answer["body_sha256"] == hashlib.sha256(payload).hexdigest()
    assert "content-length" in sized["headers"]
    assert chunked["headers"]["transfer-encoding"] == "chunked"
