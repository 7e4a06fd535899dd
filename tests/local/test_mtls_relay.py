"""No plain text between workloads (issue 17, "Done when"): under ``tulle up --pods`` a TCP relay
on the pods' bridge records every byte it carries between a caller and a STRICT workload's pod;
no request path, header value or body byte of the test's calls appears in those bytes, for
HTTP/1.1 from a sidecar and from a library-mode app, gRPC (HTTP/2), a WebSocket, and opaque
TCP (whose half-close crosses the mesh too, to the second port of the callee's pod). The relay is the only endpoint of each callee in the registry
(the real ones are deregistered, the relay's registered with the same labels and service
account), so a call that succeeds went through it; each call must also grow what the relay
carried, which starts with a TLS handshake record. A plain-text message sent through the same
relay shows that the search finds what is there, and is refused by the STRICT sidecar.

Also ``--pods`` STRICT end to end: a process outside the mesh that dials the callee's pod
address is redirected to its sidecar and refused as plain text (counted), while the mesh's
callers get through. Needs root (network namespaces and iptables)."""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import wait_until
from tests.local.conftest import Mesh, running_mesh, workload

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.timeout(300),
    pytest.mark.xdist_group("host-network"),  # never beside another (tests/conftest.py)
]

GATEWAY = "198.18.0.1"  # the pods' bridge, in the test's own namespace
PEER = "tests/local/mesh_peer.py"
CONFIG = (
    workload("client", f"[python3, {PEER}, client, --port, $(PORT)]")
    + workload("library", f"[python3, {PEER}, library, --port, $(PORT)]", mesh="library")
    + workload(
        "web",
        f"[python3, {PEER}, web, --port, $(PORT_HTTP), --tcp-port, $(PORT_SQL),"
        " --grpc-port, $(PORT_GRPC)]",
        "[{name: http, port: 8080, protocol: HTTP}, {name: sql, port: 5432, protocol: TCP},"
        " {name: grpc, port: 50051, protocol: GRPC}]",
    )
    + """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: web-strict}
spec:
  selector: {matchLabels: {app: web}}
  mtls: {mode: STRICT}
"""
)


def close_both(one: socket.socket, other: socket.socket) -> None:
    one.close()
    other.close()


@dataclass
class Relay:
    """Listens on the bridge and copies each connection to ``target`` and back, recording
    every byte of each direction (half-closes passed on, as TCP would)."""

    target: tuple[str, int]
    connections: list[tuple[bytearray, bytearray]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    sockets: list[socket.socket] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = socket.create_server((GATEWAY, 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=30)
            except OSError:
                client.close()
                continue
            sent, received = bytearray(), bytearray()
            with self.lock:
                self.connections.append((sent, received))
                self.sockets += (client, upstream)
            done = threading.Barrier(2, action=functools.partial(close_both, client, upstream))
            for args in ((client, upstream, sent), (upstream, client, received)):
                threading.Thread(target=self._copy, args=(*args, done), daemon=True).start()

    def _copy(
        self, source: socket.socket, sink: socket.socket, record: bytearray,
        done: threading.Barrier,
    ) -> None:  # fmt: skip
        try:
            while chunk := source.recv(65536):
                with self.lock:
                    record += chunk
                sink.sendall(chunk)
            sink.shutdown(socket.SHUT_WR)
        except OSError:  # reset: the other direction ends too
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        finally:
            done.wait()

    def carried(self) -> int:
        with self.lock:
            return sum(len(a) + len(b) for a, b in self.connections)

    def everything(self) -> bytes:
        with self.lock:
            return b"".join(bytes(a) + bytes(b) for a, b in self.connections)

    def close(self) -> None:
        """Stop listening and end every connection (while the pods are still there to hear
        it: a pod's socket left waiting for an answer keeps its namespace alive)."""
        self.server.close()
        with self.lock:
            for sock in self.sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


@dataclass
class Lab:
    mesh: Mesh
    replicas: dict[str, dict[str, Any]]
    relays: dict[str, Relay]

    def ask(self, caller: str, what: str, **ask: str) -> dict[str, Any]:
        """``caller``'s app makes a call (its ``POST /<what>``); what it got."""
        address = self.replicas[f"{caller}-0"]["address"]
        reply = httpx.post(f"http://{address}/{what}", json=ask, timeout=60)
        assert reply.status_code == 200, reply.text
        answer: dict[str, Any] = reply.json()
        return answer

    def refused_plain_text(self, replica: str) -> float:
        """How many plain-text connections ``replica``'s sidecar refused."""
        info = self.replicas[replica]
        metrics = httpx.get(
            f"http://{info['ip']}:{info['stats_port']}/stats/prometheus", timeout=30
        ).text
        for line in metrics.splitlines():
            if line.startswith('tulle_inbound_tls_refused_total{reason="plain_text"}'):
                return float(line.split()[-1])
        return 0.0


def synced(mesh: Mesh, pods: tuple[str, ...]) -> bool:
    """No change waits for its push, and each of ``pods`` ACKed the current endpoints."""
    api = mesh.status()["api"]
    status = httpx.get(f"{api}/api/v1/proxy-status", headers=mesh.auth, timeout=30).json()
    if status["pending"]:
        return False
    nodes = {n["node"].split("~")[2].split(".")[0]: n for n in status["nodes"]}
    return all(pod in nodes and nodes[pod]["types"]["endpoints"]["current"] for pod in pods)


def through_relay(mesh: Mesh, service: str, port: int, relay: Relay) -> None:
    """The relay becomes ``service``'s only endpoint of ``port``: the replica's own
    registration is replaced by one of the relay's address with the same labels and service
    account."""
    api = f"{mesh.status()['api']}/api/v1/endpoints"
    items = httpx.get(api, headers=mesh.auth, timeout=30).json()["items"]
    (mine,) = [i for i in items if i.get("workload") == service and i.get("port") == port]
    assert mine["labels"]["security.istio.io/tlsMode"] == "istio"
    gone = {"service": mine["service"], "address": mine["address"], "port": mine["port"]}
    reply = httpx.request("DELETE", api, json=gone, headers=mesh.auth, timeout=30)
    assert reply.status_code == 200, reply.text
    # The registry lists its fields in snake case; registration takes them in camel case.
    moved = {"service": mine["service"], "namespace": mine["namespace"],
             "servicePort": mine["service_port"], "protocol": mine["protocol"],
             "labels": mine["labels"], "serviceAccount": mine["service_account"],
             "workload": mine["workload"], "address": GATEWAY, "port": relay.port}  # fmt: skip
    assert moved["serviceAccount"] == service
    reply = httpx.post(api, json=moved, headers=mesh.auth, timeout=30)
    assert reply.status_code == 200, reply.text


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    relays: dict[str, Relay] = {}
    # A clean stop (the runner's, in running_mesh): killed at once, the pods' sockets would be
    # left waiting on peers that are gone, and keep their namespaces (and veths) alive for minutes.
    with running_mesh(tmp_path_factory.mktemp("relay"), CONFIG, pods=True) as mesh:
        try:
            replicas = {r["replica"]: r for r in mesh.status()["replicas"]}
            for name, port in (("http", 8080), ("tcp", 5432), ("grpc", 50051)):
                relays[name] = Relay((replicas["web-0"]["ip"], port))
                through_relay(mesh, "web", port, relays[name])
            wait_until(lambda: synced(mesh, ("client-0", "library-0")), timeout=60, interval=0.3)
            yield Lab(mesh, replicas, relays)
        finally:
            for relay in relays.values():
                relay.close()


def secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


def assert_not_seen(relay: Relay, *words: str) -> None:
    carried = relay.everything()
    assert carried[:2] == b"\x16\x03"  # the first connection began with a TLS handshake
    for word in words:
        assert word.encode() not in carried, f"{word!r} crossed the relay in plain text"


@pytest.mark.parametrize("caller", ["client", "library"])
def test_http_through_the_relay_is_never_plain_text(lab: Lab, caller: str) -> None:
    relay = lab.relays["http"]
    path, header, body = secret("path"), secret("header"), secret("body") * 50
    before = relay.carried()
    answer = lab.ask(caller, "http", url=f"http://web:8080/{path}?q={path}", header=header,
                     body=body)  # fmt: skip
    assert answer["ok"], answer
    seen = answer["seen"]  # the web app got it all, in the clear, from its own sidecar
    assert seen["path"] == f"/{path}?q={path}"
    assert seen["headers"]["x-secret"] == header
    assert seen["body"] == body
    assert seen["headers"]["x-forwarded-client-cert"].endswith(
        f"URI=spiffe://cluster.local/ns/default/sa/{caller}"
    )
    assert relay.carried() - before > len(body)  # the call crossed the relay
    assert_not_seen(relay, path, header, body[:40], '"x-secret"', "x-forwarded-client-cert")


def test_a_websocket_through_the_relay_is_never_plain_text(lab: Lab) -> None:
    relay = lab.relays["http"]
    path, message = secret("wspath"), secret("message")
    before = relay.carried()
    answer = lab.ask("client", "ws", url=f"http://web:8080/ws?{path}", message=message)
    assert answer == {"ok": True, "answer": f"echo:{message}"}
    assert relay.carried() - before > len(message)
    assert_not_seen(relay, path, message, "websocket", "Sec-WebSocket", "sec-websocket")


def test_grpc_through_the_relay_is_never_plain_text(lab: Lab) -> None:
    # HTTP/2 between the sidecars (ALPN h2): the method's path and the metadata would be in
    # HPACK literals, the message in DATA frames.
    relay = lab.relays["grpc"]
    message, header = secret("grpc"), secret("metadata")
    before = relay.carried()
    answer = lab.ask("client", "grpc", address="web:50051", message=message, header=header)
    assert answer == {"ok": True, "answer": f"said:{message};secret:{header}"}
    assert relay.carried() - before > len(message)
    assert_not_seen(relay, message, header, "relay.Echo", "x-secret", "PRI * HTTP/2.0")


def test_opaque_tcp_through_the_relay_is_never_plain_text(lab: Lab) -> None:
    relay = lab.relays["tcp"]
    message = secret("row") * 20
    before = len(relay.connections)
    # The client sends, shuts its write side and reads: the half-close crossed the mesh
    # (client sidecar -> mTLS close_notify -> web's sidecar -> the app's EOF), then the answer.
    # Port 5432 is web's second port: its sidecar pipes it to that port of the app.
    answer = lab.ask("client", "tcp", address="web:5432", message=message)
    assert answer == {"ok": True, "answer": f"got:{message}"}
    assert len(relay.connections) == before + 1
    sent, received = relay.connections[-1]
    assert sent[:2] == b"\x16\x03"  # a ClientHello
    assert received[:2] == b"\x16\x03"  # a ServerHello
    assert_not_seen(relay, message[:40], "got:")


def test_the_relay_search_finds_plain_text_and_strict_refuses_it(lab: Lab) -> None:
    # The control: plain text sent through the same relay is found in what it carried (so the
    # searches above would have found a leak), and web's STRICT sidecar refuses it.
    relay, control = lab.relays["http"], secret("control")
    refused_before = lab.refused_plain_text("web-0")
    with socket.create_connection((GATEWAY, relay.port), timeout=30) as sock:
        sock.sendall(f"GET /{control} HTTP/1.1\r\nhost: web\r\n\r\n".encode())
        assert sock.recv(65536) == b""  # closed without an answer
    assert control.encode() in relay.everything()
    wait_until(lambda: lab.refused_plain_text("web-0") > refused_before, timeout=30)


def test_strict_in_pods_refuses_callers_outside_the_mesh(lab: Lab) -> None:
    # This process is outside the mesh: dialling web's pod address and its HTTP port, it is
    # redirected to web's sidecar by the pod's rules and refused as plain text; so on web's TCP
    # port. The mesh's callers (the tests above, and this one's last call) get through.
    web = lab.replicas["web-0"]
    refused = lab.refused_plain_text("web-0")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{web['ip']}:8080/ready", timeout=30)
    wait_until(lambda: lab.refused_plain_text("web-0") > refused, timeout=30)
    refused = lab.refused_plain_text("web-0")
    with socket.create_connection((web["ip"], 5432), timeout=30) as sock:
        sock.sendall(b"select 1")
        sock.shutdown(socket.SHUT_WR)
        assert sock.recv(65536) == b""  # no "got:": the app never saw it
    wait_until(lambda: lab.refused_plain_text("web-0") > refused, timeout=30)
    answer = lab.ask("client", "http", url="http://web:8080/still", header="h", body="b")
    assert answer["ok"], answer
    assert answer["seen"]["path"] == "/still"


def test_the_relay_saw_only_tls_records(lab: Lab) -> None:
    # Every connection the mesh made through the relay is TLS from its first byte: record
    # type 0x16 (handshake), version 3.x. (The plain-text control above is the exception.)
    for relay in lab.relays.values():
        mesh_connections = [
            (sent, received) for sent, received in list(relay.connections)
            if not bytes(sent).startswith(b"GET ")
        ]  # fmt: skip
        assert mesh_connections
        for sent, _ in mesh_connections:
            assert sent[:2] == b"\x16\x03", bytes(sent[:16])
