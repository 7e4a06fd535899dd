"""An HTTP/1.1 backend in the test process that records every request exactly as it arrived, to
show what a proxy let through (a smuggled request, a forged or carried-over header, a path).
It reads requests as a lenient server would (the victim of a smuggling attack): keep-alive,
Content-Length or chunked bodies with their trailers.

Paths: ``/ws-accept`` answers 101 and then echoes raw bytes with ``echo:``; ``/ws-refuse``
answers 200 to an Upgrade; ``/unasked-101`` answers 101 to any request; ``/huge?mb=N``
answers N MiB, counting in ``sent`` what the socket took; ``/trailers`` answers a chunked body
with a trailer; ``/slow-body`` reads its body one chunk at a time; anything else answers 200
with JSON of what arrived."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recorded:
    """One request as the backend read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass
class RecordingBackend:
    """The server, its port, and what it recorded."""

    server: socketserver.ThreadingTCPServer
    port: int
    requests: list[Recorded] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # bytes written by /huge, by its query
    open_connections: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        return [r.target for r in self.requests]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class _Reader:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self.buffer += data
        return True

    def line(self) -> bytes | None:
        while b"\n" not in self.buffer:
            if not self._fill():
                return None
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.rstrip(b"\r")

    def exactly(self, size: int) -> bytes | None:
        while len(self.buffer) < size:
            if not self._fill():
                return None
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data


def _read_request(reader: _Reader) -> Recorded | None:
    line = reader.line()
    while line == b"":
        line = reader.line()
    if line is None:
        return None
    method, target, _ = line.decode("latin-1").split(" ", 2)
    headers: list[tuple[str, str]] = []
    while True:
        raw = reader.line()
        if raw is None:
            return None
        if not raw:
            break
        name, _, value = raw.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    request = Recorded(method, target, headers, b"")
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        chunks = []
        while True:
            size_line = reader.line()
            if size_line is None:
                return None
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while True:  # trailers, recorded as headers of this request
                    trailer = reader.line()
                    if not trailer:
                        break
                    name, _, value = trailer.decode("latin-1").partition(":")
                    headers.append((name.strip(), value.strip()))
                break
            chunk = reader.exactly(size)
            if chunk is None or reader.line() is None:
                return None
            chunks.append(chunk)
        request.body = b"".join(chunks)
    else:
        length = int(request.header("content-length") or 0)
        body = reader.exactly(length) if length else b""
        if body is None:
            return None
        request.body = body
    return request


def _respond(sock: socket.socket, status: int, body: bytes, extra: str = "") -> None:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}\r\n"
    )
    sock.sendall(head.encode() + body)


def start_recording_backend() -> RecordingBackend:
    """A RecordingBackend on a free loopback port, serving in threads."""
    holder: dict[str, RecordingBackend] = {}

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            backend = holder["backend"]
            sock: socket.socket = self.request
            with backend.lock:
                backend.open_connections += 1
            try:
                self._serve(backend, sock)
            except OSError:
                pass
            finally:
                with backend.lock:
                    backend.open_connections -= 1

        def _serve(self, backend: RecordingBackend, sock: socket.socket) -> None:
            reader = _Reader(sock)
            while True:
                request = _read_request(reader)
                if request is None:
                    return
                backend.requests.append(request)
                path = request.target
                if path.startswith("/ws-accept") or path.startswith("/unasked-101"):
                    sock.sendall(
                        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n"
                        b"connection: upgrade\r\n\r\n"
                    )
                    data = reader.buffer
                    while True:
                        if data:
                            sock.sendall(b"echo:" + data)
                        data = sock.recv(65536)
                        if not data:
                            return
                if path.startswith("/huge"):
                    megabytes = int(path.split("mb=")[1])
                    total = megabytes * 1024 * 1024
                    sock.sendall(f"HTTP/1.1 200 OK\r\ncontent-length: {total}\r\n\r\n".encode())
                    piece = b"x" * 65536
                    backend.sent[path] = 0
                    for _ in range(total // len(piece)):
                        sock.sendall(piece)
                        backend.sent[path] += len(piece)
                    continue
                if path.startswith("/trailers"):
                    sock.sendall(
                        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-trailer\r\n"
                        b"\r\n5\r\nhello\r\n0\r\nx-trailer: from-the-first-response\r\n\r\n"
                    )
                    continue
                payload: dict[str, Any] = {
                    "method": request.method,
                    "path": request.target,
                    "headers": request.headers,
                    "body_length": len(request.body),
                }
                _respond(sock, 200, json.dumps(payload).encode(), "x-backend: recording\r\n")

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    backend = RecordingBackend(server, server.server_address[1])
    holder["backend"] = backend
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return backend
