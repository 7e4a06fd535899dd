"""The apps of the relay test (tests/local/test_mtls_relay.py), standard library only but for
``tulle.client`` in the library role. One program, four roles, each serving on ``--port``:

- ``web``: HTTP/1.1; every request is answered with what arrived (method, path, headers, body)
  as JSON, and ``GET /ws`` with ``Upgrade: websocket`` is a WebSocket (RFC 6455) that answers
  each text message with ``echo:<message>``; and, on ``--tcp-port``, opaque TCP: it reads until
  the client half-closes, answers ``got:<what it read>`` and closes (the half-close must cross
  the mesh); and, on ``--grpc-port``, a gRPC method ``/relay.Echo/Say`` (raw bytes) answering
  ``said:<request>;secret:<the x-secret metadata>``;
- ``client`` (an app beside a sidecar, in a pod: it dials names and its rules redirect it):
  ``POST /http`` sends the JSON ``{"url", "header", "body"}`` it gets as a POST with the header
  ``x-secret``; ``POST /ws`` opens a WebSocket to ``url`` and sends ``message``; ``POST /tcp``
  sends ``message`` to ``address`` (``host:port``), half-closes and reads the answer;
  ``POST /grpc`` calls ``/relay.Echo/Say`` at ``address`` with ``message`` and the metadata
  ``x-secret: header``;
- ``library``: ``POST /http`` as the client's, through ``tulle.client`` (library mode).

Each answers ``{"ok": ..., ...}`` as JSON, with the reason when a call failed."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import socket
import struct
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

os.environ.setdefault("GRPC_DNS_RESOLVER", "native")  # names from /etc/hosts, as libc does

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TIMEOUT = 20


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def read_head(sock: socket.socket) -> tuple[bytes, bytes]:
    """An HTTP head (up to the blank line) and the bytes read after it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before the end of the head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


class Frames:
    """WebSocket frames on a socket (what came with the head first)."""

    def __init__(self, sock: socket.socket, rest: bytes, mask: bool) -> None:
        self.sock, self.buffer, self.mask = sock, rest, mask

    def _take(self, size: int) -> bytes:
        if len(self.buffer) < size:
            self.buffer += read_exactly(self.sock, size - len(self.buffer))
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def receive(self) -> tuple[int, bytes]:
        first, second = self._take(2)
        size = second & 0x7F
        if size == 126:
            (size,) = struct.unpack("!H", self._take(2))
        elif size == 127:
            (size,) = struct.unpack("!Q", self._take(8))
        key = self._take(4) if second & 0x80 else b""
        payload = self._take(size)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return first & 0x0F, payload

    def send(self, opcode: int, payload: bytes) -> None:
        size = len(payload)
        length = bytes([size]) if size < 126 else b"\x7e" + struct.pack("!H", size)
        if self.mask:  # a client masks what it sends (RFC 6455 section 5.3)
            key = os.urandom(4)
            masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            frame = bytes([0x80 | opcode, length[0] | 0x80]) + length[1:] + key + masked
        else:
            frame = bytes([0x80 | opcode]) + length + payload
        self.sock.sendall(frame)


# --- the servers ---------------------------------------------------------------------------


class Web(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.headers.get("upgrade", "").lower() == "websocket":
            self.websocket()
        else:
            self.answer()

    def do_POST(self) -> None:
        self.answer()

    def answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode(errors="replace")
        seen = {"method": self.command, "path": self.path, "body": body,
                "headers": {k.lower(): v for k, v in self.headers.items()}}  # fmt: skip
        data = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def websocket(self) -> None:
        key = self.headers.get("sec-websocket-key", "")
        self.send_response(101, "Switching Protocols")
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", accept_key(key))
        self.end_headers()
        self.wfile.flush()
        frames = Frames(self.connection, b"", mask=False)
        while True:
            opcode, payload = frames.receive()
            if opcode == 0x8:  # close: answered, then the connection ends
                frames.send(0x8, payload)
                break
            if opcode == 0x1:
                frames.send(0x1, b"echo:" + payload)
        self.close_connection = True


def serve_tcp(host: str, port: int) -> None:
    server = socket.create_server((host, port), backlog=128)

    def one(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(TIMEOUT)
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(b"got:" + data)  # after the client's half-close

    while True:
        conn, _ = server.accept()
        threading.Thread(target=one, args=(conn,), daemon=True).start()


def serve_grpc(host: str, port: int) -> Any:
    from concurrent import futures

    import grpc

    def say(request: bytes, context: Any) -> bytes:
        secret = dict(context.invocation_metadata()).get("x-secret", "")
        return b"said:" + request + b";secret:" + secret.encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    handler = grpc.method_handlers_generic_handler(
        "relay.Echo", {"Say": grpc.unary_unary_rpc_method_handler(say)}
    )
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port(f"{host}:{port}")
    server.start()
    return server


# --- the callers ----------------------------------------------------------------------------


def call_http(ask: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        ask["url"], data=ask["body"].encode(), method="POST", headers={"x-secret": ask["header"]}
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=TIMEOUT) as reply:
            return {"ok": True, "status": reply.status, "seen": json.loads(reply.read())}
    except urllib.error.HTTPError as error:
        return {"ok": False, "status": error.code, "reason": error.headers.get("x-tulle-error")}
    except OSError as error:
        return {"ok": False, "reason": str(error)}


def call_websocket(ask: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(ask["url"])
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((url.hostname, url.port or 80), timeout=TIMEOUT) as sock:
        sock.sendall(
            f"GET {url.path} HTTP/1.1\r\nhost: {url.netloc}\r\nupgrade: websocket\r\n"
            f"connection: Upgrade\r\nsec-websocket-key: {key}\r\n"
            "sec-websocket-version: 13\r\n\r\n".encode()
        )
        head, rest = read_head(sock)
        status = head.split(b"\r\n", 1)[0].decode()
        headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.decode().partition(":") for line in head.split(b"\r\n")[1:])
        }
        if " 101 " not in status + " ":
            return {"ok": False, "reason": status, "headers": headers}
        if headers.get("sec-websocket-accept") != accept_key(key):
            return {"ok": False, "reason": f"bad accept {headers.get('sec-websocket-accept')}"}
        frames = Frames(sock, rest, mask=True)
        frames.send(0x1, ask["message"].encode())
        opcode, answer = frames.receive()
        frames.send(0x8, struct.pack("!H", 1000))
        closing, _ = frames.receive()
        return {"ok": opcode == 0x1 and closing == 0x8, "answer": answer.decode()}


def call_tcp(ask: dict[str, Any]) -> dict[str, Any]:
    host, _, port = ask["address"].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as sock:
        sock.sendall(ask["message"].encode())
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return {"ok": True, "answer": answer.decode()}


def call_grpc(ask: dict[str, Any]) -> dict[str, Any]:
    import grpc

    with grpc.insecure_channel(ask["address"]) as channel:
        say = channel.unary_unary("/relay.Echo/Say")
        try:
            answer = say(ask["message"].encode(), metadata=[("x-secret", ask["header"])],
                         timeout=TIMEOUT)  # fmt: skip
        except grpc.RpcError as error:
            return {"ok": False, "reason": f"{error.code().name}: {error.details()}"}
    return {"ok": True, "answer": answer.decode()}


def library_http() -> Callable[[dict[str, Any]], dict[str, Any]]:
    import tulle.client

    client = tulle.client.Client(timeout=TIMEOUT)

    def call(ask: dict[str, Any]) -> dict[str, Any]:
        tulle.client.wait_ready()
        try:
            reply = client.post(
                ask["url"], content=ask["body"], headers={"x-secret": ask["header"]}
            )
        except tulle.client.MeshError as error:
            return {"ok": False, "reason": error.reason}
        return {"ok": reply.status_code == 200, "status": reply.status_code, "seen": reply.json()}

    return call


def caller(calls: dict[str, Callable[[dict[str, Any]], dict[str, Any]]]) -> type:
    class Caller(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:  # readiness
            self.reply({"ok": True})

        def do_POST(self) -> None:
            ask = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
            call = calls.get(self.path)
            try:
                answer = call(ask) if call else {"ok": False, "reason": f"no {self.path}"}
            except (OSError, ValueError) as error:
                answer = {"ok": False, "reason": f"{type(error).__name__}: {error}"}
            self.reply(answer)

        def reply(self, answer: dict[str, Any]) -> None:
            data = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Caller


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["web", "client", "library"])
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tcp-port", type=int)
    parser.add_argument("--grpc-port", type=int)
    args = parser.parse_args()
    if args.role == "web":
        if args.tcp_port:
            threading.Thread(target=serve_tcp, args=(args.host, args.tcp_port), daemon=True).start()
        # Held while this runs: a gRPC server stops once it is collected.
        _grpc_server = serve_grpc(args.host, args.grpc_port) if args.grpc_port else None
        handler: type = Web
    elif args.role == "client":
        handler = caller(
            {"/http": call_http, "/ws": call_websocket, "/tcp": call_tcp, "/grpc": call_grpc}
        )
    else:
        handler = caller({"/http": library_http()})
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    server.serve_forever()


if __name__ == "__main__":
    main()
