"""The sidecar's HTTP/1.1 listeners against a hostile client: request smuggling (RFC 9112's
framing rules, as HAProxy, nginx and Envoy enforce them), pipelining, trailers, Upgrade,
requests cut mid-body, path tricks against an AuthorizationPolicy, clients that stop reading,
slow and idle clients. Each attack runs on its own connection against one shared mesh
(tests/e2e/mesh.py) whose recording backend shows what got through."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import Processes, synced, wait_until
from tests.e2e.hostile import (
    Hostile,
    closed_by_peer,
    hostile_mesh,
    open_files,
    read_responses,
    recv_until,
    rss_mb,
)

HOST = b"Host: web:8080\r\n"


@pytest.fixture(scope="module")
def mesh() -> Iterator[Hostile]:
    yield from hostile_mesh()


def get(path: str, extra: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\n" + HOST + extra + b"\r\n"


def test_pipelined_requests_are_all_answered_when_the_pool_has_an_idle_connection(
    mesh: Hostile,
):
    with mesh.connect() as warm:  # leaves an idle upstream connection in the pool
        warm.sendall(get("/warm"))
        assert read_responses(warm, 1)[0][0] == 200
    with mesh.connect() as conn:
        conn.sendall(get("/a") + get("/b"))
        answers = read_responses(conn, 2)
    assert [json.loads(body)["path"] for _, _, body in answers] == ["/a", "/b"]
    with mesh.connect() as conn:
        conn.sendall(b"".join(get(f"/p{i}") for i in range(40)))
        answers = read_responses(conn, 40)
    assert [json.loads(body)["path"] for _, _, body in answers] == [f"/p{i}" for i in range(40)]


# Each is refused with a 400 (or 413/431) before anything reaches the backend: a lenient
# server behind the proxy would read "/smuggled" as a request of its own.
SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: web:8080\r\n\r\n"
SMUGGLING = {
    "cl-te": b"POST / HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-cl": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n"
    b"Content-Length: 60\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "two-lengths": b"POST / HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 0\r\n"
    b"Content-Length: 44\r\n\r\n" + SMUGGLED,
    "length-list": b"POST / HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 0, 44\r\n\r\n" + SMUGGLED,
    "length-plus": b"POST / HTTP/1.1\r\nHost: web:8080\r\nContent-Length: +0\r\n\r\n" + SMUGGLED,
    "length-hex": b"POST / HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 0x0\r\n\r\n" + SMUGGLED,
    "te-not-last": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked, identity"
    b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-xchunked": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: xchunked\r\n\r\n"
    b"0\r\n\r\n" + SMUGGLED,
    "te-space-before-colon": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding : chunked"
    b"\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "te-obs-fold": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: identity\r\n"
    b" chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
    "obs-fold": b"GET / HTTP/1.1\r\nHost: web:8080\r\nX-A: a\r\n b\r\n\r\n" + SMUGGLED,
    "bare-lf": b"GET / HTTP/1.1\nHost: web:8080\n\n" + SMUGGLED,
    "bare-cr": b"GET / HTTP/1.1\r\nHost: web:8080\r\nX-A: a\rb\r\n\r\n" + SMUGGLED,
    "nul-in-header": b"GET / HTTP/1.1\r\nHost: web:8080\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED,
    "chunk-size-overflow": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked"
    b"\r\n\r\n10000000000000000001\r\nx\r\n0\r\n\r\n" + SMUGGLED,
    "chunk-size-0x": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0x0\r\n\r\n" + SMUGGLED,
    "chunk-size-space": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0 x\r\n\r\n" + SMUGGLED,
    "chunk-no-crlf": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\r\nabcX0\r\n\r\n" + SMUGGLED,
    "chunk-lf-only": b"POST / HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3\nabc\n0\n\n" + SMUGGLED,
    "two-hosts": b"GET / HTTP/1.1\r\nHost: web:8080\r\nHost: other:8080\r\n\r\n" + SMUGGLED,
    "absolute-form-other-host": b"GET http://other:8080/ HTTP/1.1\r\nHost: web:8080\r\n\r\n"
    + SMUGGLED,
    "space-in-target": b"GET /a b HTTP/1.1\r\nHost: web:8080\r\n\r\n" + SMUGGLED,
    "http-0.9-ish": b"GET /\r\n\r\n" + SMUGGLED,
    "bad-version": b"GET / HTTP/1.2\r\nHost: web:8080\r\n\r\n" + SMUGGLED,
    "space-before-name": b"GET / HTTP/1.1\r\n Host: web:8080\r\n\r\n" + SMUGGLED,
    "header-without-colon": b"GET / HTTP/1.1\r\nHost: web:8080\r\nX-A\r\n\r\n" + SMUGGLED,
    "method-with-slash": b"G/ET / HTTP/1.1\r\nHost: web:8080\r\n\r\n" + SMUGGLED,
    "broken-ipv6-target": b"GET http://[::1/ HTTP/1.1\r\nHost: web:8080\r\n\r\n" + SMUGGLED,
}


@pytest.mark.parametrize("attack", sorted(SMUGGLING))
def test_a_smuggling_attempt_is_refused_and_nothing_reaches_the_backend(mesh: Hostile, attack: str):
    before = len(mesh.backend.requests)
    with mesh.connect() as conn:
        conn.sendall(SMUGGLING[attack])
        ((status, headers, _),) = read_responses(conn, 1)
        assert 400 <= status < 500, (status, headers)
        assert "x-tulle-error" in headers
        assert closed_by_peer(conn)  # nothing after a refused request is read
    assert "/smuggled" not in mesh.backend.paths()[before:]


def test_underscored_header_names_are_dropped(mesh: Hostile):
    with mesh.connect() as conn:
        conn.sendall(
            b"GET /underscores HTTP/1.1\r\nHost: web:8080\r\nContent_Length: 5\r\n"
            b"Transfer_Encoding: chunked\r\nX_Tulle_Source_Workload: admin\r\nX-Kept: yes\r\n\r\n"
        )
        ((status, _, body),) = read_responses(conn, 1)
    assert status == 200
    names = [name.lower() for name, _ in json.loads(body)["headers"]]
    assert "x-kept" in names
    assert not [name for name in names if "_" in name]


def test_chunked_trailers_never_become_headers_of_the_next_request(mesh: Hostile):
    with mesh.connect() as conn:
        conn.sendall(
            b"POST /first HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nHost: other:8080\r\nX-Injected: yes\r\n\r\n" + get("/next")
        )
        answers = read_responses(conn, 2)
    assert [status for status, _, _ in answers] == [200, 200]
    first, following = (json.loads(body) for _, _, body in answers)
    assert first["path"] == "/first"
    assert following["path"] == "/next"
    headers = {name.lower(): value for name, value in following["headers"]}
    assert headers["host"] == "web:8080"
    assert "x-injected" not in headers


def test_an_upstreams_trailers_never_reach_the_next_response(mesh: Hostile):
    with mesh.connect() as conn:
        conn.sendall(get("/trailers") + get("/after-trailers"))
        answers = read_responses(conn, 2)
    assert answers[0][2] == b"hello"
    assert "x-trailer" not in answers[1][1]
    assert json.loads(answers[1][2])["path"] == "/after-trailers"


def test_a_refused_upgrade_leaves_the_next_request_to_routing(mesh: Hostile):
    upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    with mesh.connect() as conn:
        conn.sendall(get("/ws-refuse", upgrade) + get("/second"))
        answers = read_responses(conn, 2)
    assert [status for status, _, _ in answers] == [200, 200]
    second = json.loads(answers[1][2])
    assert second["path"] == "/second"
    # It went through the engine's route (which sets x-routed), not raw down a tunnel.
    assert ["x-routed", "yes"] in second["headers"]


def test_an_accepted_upgrade_tunnels_only_after_the_101(mesh: Hostile):
    upgrade = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"
    with mesh.connect() as conn:
        conn.sendall(get("/ws-accept", upgrade) + b"early bytes")
        reply = recv_until(conn, b"echo:early bytes")
        assert reply.startswith(b"HTTP/1.1 101 ")
        conn.sendall(b"later")
        recv_until(conn, b"echo:later")
    accepted = [r for r in mesh.backend.requests if r.target == "/ws-accept"]
    assert accepted[-1].header("x-routed") == "yes"
    assert accepted[-1].body == b""  # the early bytes came after the 101, not as a body


def test_an_upgrade_request_with_a_body_is_refused(mesh: Hostile):
    with mesh.connect() as conn:
        conn.sendall(
            b"POST /ws-accept HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade\r\n"
            b"Upgrade: websocket\r\nContent-Length: 5\r\n\r\nhello"
        )
        ((status, headers, _),) = read_responses(conn, 1)
    assert status == 400
    assert "Upgrade" in headers["x-tulle-error"]


def test_an_unasked_101_is_an_error_with_its_reason(mesh: Hostile):
    with mesh.connect() as conn:
        conn.sendall(get("/unasked-101"))
        ((status, headers, _),) = read_responses(conn, 1)
    assert status == 503
    assert "switched protocols" in headers["x-tulle-error"]


def test_requests_cut_mid_body_leave_no_upstream_connection(mesh: Hostile):
    backend = mesh.backend
    wait_until(lambda: backend.open_connections <= 2, timeout=30)
    baseline = backend.open_connections
    for _ in range(60):
        with mesh.connect() as conn:
            conn.sendall(
                b"POST /cut HTTP/1.1\r\nHost: web:8080\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\nZZ\r\n"
            )
            statuses = [status for status, _, _ in read_responses(conn, 1)]
            assert statuses[0] == 400
    # Each request's upstream connection held half a request: each must have been closed.
    wait_until(lambda: backend.open_connections <= baseline + 2, timeout=30)
    # The client's bad body is not the endpoint's failure: it is not ejected.
    with mesh.connect() as conn:
        conn.sendall(get("/still-there"))
        assert read_responses(conn, 1)[0][0] == 200


@pytest.mark.parametrize(
    "path", ["/./admin", "/x/../admin", "/%61dmin", "/%2e/admin", "/%2E%2E/admin", "/a\\..\\admin"]
)
def test_inbound_policy_sees_the_normalized_path(mesh: Hostile, path: str):
    with mesh.connect(inbound=True) as conn:
        conn.sendall(get(path))
        ((status, headers, _),) = read_responses(conn, 1)
    assert status == 403, path
    assert headers["x-tulle-error"] == "denied by policy default/deny-admin"


def test_the_app_receives_the_normalized_path(mesh: Hostile):
    with mesh.connect(inbound=True) as conn:
        conn.sendall(get("/x/./y/../%7Euser?q=/../z"))
        ((status, _, body),) = read_responses(conn, 1)
    assert status == 200
    assert json.loads(body)["path"] == "/x/~user?q=/../z"


def test_a_client_that_stops_reading_pauses_the_upstream(mesh: Hostile):
    pid = mesh.pid
    start_rss = rss_mb(pid)
    path = "/huge?mb=96"
    with mesh.connect() as conn:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        conn.sendall(get(path))
        sent = mesh.backend.sent
        wait_until(lambda: sent.get(path, 0) >= 1 << 20, timeout=30)
        # The backend writes only as fast as the client reads: never the whole 96 MiB. It
        # stops within the socket buffers on its way and the proxy's watermarks (a few MiB).
        with pytest.raises(AssertionError, match="condition not met"):
            wait_until(lambda: sent[path] >= 40 << 20, timeout=3)
        assert rss_mb(pid) - start_rss < 48
        received = 0
        while received < 96 << 20:  # and the whole body arrives once the client reads
            chunk = conn.recv(1 << 20)
            assert chunk
            received += len(chunk)
    assert received >= 96 << 20


def test_slow_and_idle_clients_are_cut_off(mesh: Hostile):
    processes = Processes()
    try:
        sidecar = processes.sidecar(
            mesh.plane, "client-1", None, "--request-header-timeout", "1",
            "--idle-timeout", "2",
        )  # fmt: skip
        wait_until(lambda: synced(mesh.plane, sidecar.node))
        address = ("127.0.0.1", sidecar.http_proxy_port)
        slow = [socket.create_connection(address, timeout=20) for _ in range(20)]
        idle = [socket.create_connection(address, timeout=20) for _ in range(20)]
        for conn in idle[:5]:  # HTTP/2 connections with no stream: idle too (GOAWAY, close)
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        for conn in slow:
            conn.sendall(b"GET / HTTP/1.1\r\nHo")  # ...and never the rest
        used = socket.create_connection(address, timeout=20)
        used.sendall(get("/then-idle"))
        assert read_responses(used, 1)[0][0] == 200
        for conn in slow:
            ((status, headers, _),) = read_responses(conn, 1)
            assert status == 408
            assert "request headers not received" in headers["x-tulle-error"]
        for conn in [*idle, used]:
            assert closed_by_peer(conn)
        for conn in [*slow, *idle, used]:
            conn.close()
        wait_until(lambda: open_files(sidecar.proc.pid) < 40, timeout=20)
    finally:
        processes.stop_all()


def test_merging_slashes_is_the_meshs_choice(mesh: Hostile):
    """Last in the module: it changes the mesh's path normalization, then restores it."""
    with mesh.connect(inbound=True) as conn:  # BASE keeps "//": the app's to judge
        conn.sendall(get("//admin"))
        assert read_responses(conn, 1)[0][0] == 200
    merging = "apiVersion: tulle.dev/v1alpha1\nkind: Mesh\nmetadata: {name: mesh}\n"
    mesh.plane.apply(merging + "spec: {pathNormalization: {normalization: MERGE_SLASHES}}\n")
    try:
        wait_until(lambda: synced(mesh.plane, mesh.sidecar.node))
        for path in ("//admin", "///admin/x", "/%2e//admin"):
            with mesh.connect(inbound=True) as conn:
                conn.sendall(get(path))
                assert read_responses(conn, 1)[0][0] == 403, path
    finally:
        mesh.plane.apply(merging + "spec: {pathNormalization: {normalization: BASE}}\n")
        wait_until(lambda: synced(mesh.plane, mesh.sidecar.node))
