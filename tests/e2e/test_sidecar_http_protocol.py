"""The sidecar proxy from outside: a real control plane, real HTTP backends, ``tulle proxy``, and
httpx / curl / raw sockets as the app. HTTP handling: malformed and smuggling requests, CONNECT,
keep-alive and pipelining, Upgrade tunnels, an HTTP/2 client to an HTTP/1.1 service, HTTP/1.0,
request ids and informational responses."""

from __future__ import annotations

import hashlib
import json
import re
import socket
import subprocess
import sys
import threading

import httpx
import pytest

from tests.e2e.conftest import (
    register,
    synced,
    wait_until,
)
from tests.e2e.hostile import recv_until
from tests.e2e.sidecar_http import (
    WEB,
)

SMUGGLING = {
    "content-length and transfer-encoding": b"POST http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "obs-fold": b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nX-A: 1\r\n 2\r\n\r\n",
    "bare LF": b"GET http://web:8080/ HTTP/1.1\nHost: web:8080\n\n",
    "oversized headers": b"GET http://web:8080/ HTTP/1.1\r\nHost: web:8080\r\nX-Big: "
    + b"a" * 70000
    + b"\r\n\r\n",
    "garbage": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_malformed_and_smuggling_requests_get_400_and_are_never_forwarded(
    name, control_plane, processes, tmp_path
):
    register(control_plane, processes, a={})
    log = tmp_path / "access.log"
    sidecar = processes.sidecar(control_plane, log=log)
    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(SMUGGLING[name])
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    status = int(reply.split(b" ", 2)[1])
    assert status == (431 if name == "oversized headers" else 400), reply[:200]
    assert b"x-tulle-error: bad request:" in reply
    assert b"callback" not in reply  # the mesh's own reason, not the parser library's wrapper
    with sidecar.client() as client:  # the proxy lives on, and nothing reached the backend
        assert client.get(f"{WEB}/after").status_code == 200

    def forwarded() -> list[str]:
        text = log.read_text()
        entries = [json.loads(line) for line in text[: text.rfind("\n") + 1].splitlines()]
        return [e["path"] for e in entries if e["upstream"]]

    wait_until(lambda: "/after" in forwarded())  # the access log is written in batches
    assert forwarded() == ["/after"]


def test_connect_is_refused_with_what_to_do_instead(control_plane, processes):
    # An app with HTTPS_PROXY pointing at the sidecar sends CONNECT: say so, not just "bad target".
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(b"CONNECT web:8443 HTTP/1.1\r\nHost: web:8443\r\n\r\n")
        reply = b""
        while chunk := conn.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400 ")
    assert (
        b"x-tulle-error: bad request: CONNECT web:8443 (a tunnel, as HTTPS_PROXY asks for) is not"
        b" supported; send http:// URLs through this proxy\r\n"
    ) in reply


def test_keep_alive_pipelining_head_and_bodies(control_plane, processes):
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    two = (
        b"POST http://web:8080/one HTTP/1.1\r\nHost: web:8080\r\nContent-Length: 5\r\n\r\nhello"
        b"GET http://web:8080/two HTTP/1.1\r\nHost: web:8080\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(two)
        reply = b""
        while reply.count(b"HTTP/1.1 200") < 2:
            reply += conn.recv(65536)
    first, second = reply.split(b"HTTP/1.1 200")[1:]
    assert b'"path": "/one"' in first
    assert b'"body": "hello"' in first
    assert b'"path": "/two"' in second
    head = subprocess.run(
        ["curl", "-sI", "-x", sidecar.proxy_url, f"{WEB}/head"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    assert head.stdout.startswith("HTTP/1.1 200")
    # A HEAD's answer keeps the length the body would have (the backend's), not 0.
    length = re.search(r"(?im)^content-length:\s*(\d+)", head.stdout)
    assert length is not None, head.stdout
    assert int(length.group(1)) > 100, head.stdout
    chunked = subprocess.run(
        ["curl", "-s", "-x", sidecar.proxy_url, "-H", "Transfer-Encoding: chunked", "--data-binary", "@-", f"{WEB}/up"],
        input="streamed body", capture_output=True, text=True, timeout=20, check=True,
    )  # fmt: skip
    assert json.loads(chunked.stdout)["body"] == "streamed body"


UPGRADE_SERVER = """\
import asyncio, sys

async def serve(reader, writer):
    head = await reader.readuntil(b"\\r\\n\\r\\n")
    if b"upgrade: echo" not in head.lower():
        writer.write(b"HTTP/1.1 400 Bad Request\\r\\ncontent-length: 0\\r\\n\\r\\n"); writer.close(); return
    writer.write(b"HTTP/1.1 101 Switching Protocols\\r\\nConnection: Upgrade\\r\\nUpgrade: echo\\r\\n\\r\\n")
    while data := await reader.read(65536):
        writer.write(data.upper())
    writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print("READY", server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


def test_upgrade_is_tunnelled(control_plane, processes, tmp_path):
    script = tmp_path / "upgrade_server.py"
    script.write_text(UPGRADE_SERVER)

    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    processes.started.append(proc)
    assert proc.stdout is not None
    port = int(proc.stdout.readline().split()[1])
    control_plane.register(service="web", address="127.0.0.1", port=port, servicePort=8080)
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(
            b"GET http://web:8080/chat HTTP/1.1\r\nHost: web:8080\r\nConnection: Upgrade\r\n"
            b"Upgrade: echo\r\n\r\nhello "
        )
        reply = recv_until(conn, b"HELLO ")
        assert reply.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        conn.sendall(b"tunnel")
        recv_until(conn, b"TUNNEL")


def test_an_http2_client_reaches_an_http1_service_over_http1(control_plane, processes, tmp_path):
    # The upstream protocol is the cluster's (Istio: HTTP/1.1 for an HTTP port, HTTP/2 for GRPC
    # and HTTP2 ports), not the client's: h2c from curl to an HTTP/1.1 backend got a 503
    # "upstream reset connection closed" when the sidecar spoke HTTP/2 upstream.
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    url = f"http://127.0.0.1:{sidecar.http_proxy_port}"
    h2c = ["curl", "-s", "--http2-prior-knowledge", "-H", "Host: web:8080"]
    got = subprocess.run(
        [*h2c, f"{url}/big", "-o", str(tmp_path / "big"), "-w", "%{http_code} %{http_version}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert got.stdout == "200 2"
    assert (tmp_path / "big").read_bytes() == bytes(range(256)) * (3 * 4096)
    sent = bytes(range(256)) * 400  # over the HTTP/2 window of the client's connection
    (tmp_path / "body").write_bytes(sent)
    posted = subprocess.run(
        [*h2c, f"{url}/echo", "--data-binary", f"@{tmp_path / 'body'}"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    echoed = json.loads(posted.stdout)
    assert echoed["body_length"] == len(sent)
    assert echoed["body_sha256"] == hashlib.sha256(sent).hexdigest()


def test_an_http10_client_gets_a_streamed_body_delimited_by_the_close(control_plane, processes):
    # HTTP/1.0 has no chunked coding (RFC 9112 §6.1: a server must not send Transfer-Encoding
    # to it): a body of unknown length goes out as it comes and ends with the connection.
    ports = register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, sidecar.node))
    release = threading.Timer(
        0.3, lambda: httpx.get(f"http://127.0.0.1:{ports['a']}/release", timeout=10)
    )
    release.start()
    with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
        conn.sendall(b"GET /stream HTTP/1.0\r\nHost: web:8080\r\n\r\n")
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    release.join()
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in head.lower()
    assert body == b"firstsecond"


def test_each_request_gets_an_id_unless_it_brings_one(control_plane, processes):
    register(control_plane, processes, a={})
    sidecar = processes.sidecar(control_plane)
    with sidecar.client() as client:
        given = [client.get(f"{WEB}/id").json()["headers"]["x-request-id"] for _ in range(3)]
        kept = client.get(f"{WEB}/id", headers={"x-request-id": "mine-1"}).json()["headers"]
    uuid_form = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
    assert all(uuid_form.fullmatch(id_) for id_ in given), given
    assert len(set(given)) == 3
    assert kept["x-request-id"] == "mine-1"


def test_an_upstreams_informational_response_is_passed_on(control_plane, processes):
    """A 103 Early Hints from the upstream reaches the client before the final response."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve_once() -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                request += conn.recv(65536)
            conn.sendall(b"HTTP/1.1 103 Early Hints\r\nlink: </app.css>; rel=preload\r\n\r\n")
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")

    server = threading.Thread(target=serve_once, daemon=True)
    server.start()
    control_plane.register(service="web", address="127.0.0.1", port=port, servicePort=8080)
    try:
        sidecar = processes.sidecar(control_plane)
        wait_until(lambda: synced(control_plane, sidecar.node))
        with socket.create_connection(("127.0.0.1", sidecar.http_proxy_port), timeout=10) as conn:
            conn.sendall(b"GET http://web:8080/ HTTP/1.1\r\nhost: web:8080\r\n\r\n")
            received = b""
            while not received.endswith(b"ok"):
                chunk = conn.recv(65536)
                if not chunk:
                    break
                received += chunk
    finally:
        server.join(5)
        listener.close()
    early, _, final = received.partition(b"\r\n\r\n")
    assert early.split(b"\r\n") == [b"HTTP/1.1 103 Early Hints", b"link: </app.css>; rel=preload"]
    assert final.startswith(b"HTTP/1.1 200 OK\r\n")
    assert final.endswith(b"\r\n\r\nok")
