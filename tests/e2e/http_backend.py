"""A plain HTTP/1.1 backend for the end-to-end tests (standard library only): answers every
request with its name and what it received (``/call?url=U`` fetches U as an app would, through
``HTTP_PROXY`` when set; ``/_count`` answers how many requests it has answered; ``/held`` answers
once ``/release`` has been called). ``--fail-rate`` answers that share with 503,
``--delay`` waits before answering. Prints ``READY <port>``; stops on SIGTERM."""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument(
        "--gather", type=int, default=0,
        help="the first N requests wait until all N have arrived (concurrency made certain)",
    )  # fmt: skip
    args = parser.parse_args()
    gathering = threading.Barrier(args.gather) if args.gather > 1 else None
    arrived = [0]
    chance = random.Random()
    released = threading.Event()
    served = [0]  # requests answered, for GET /_count
    counting = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body go out in separate writes: without this, Nagle's algorithm and
            # the peer's delayed ACK add 40 ms to every response.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _stream(self) -> None:
            """``/stream``: a chunked body whose second piece waits for ``/release``."""
            self.send_response(200)
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nfirst\r\n")
            self.wfile.flush()
            released.wait(30)
            self.wfile.write(b"6\r\nsecond\r\n0\r\n\r\n")

        def _big(self) -> None:
            """``/big``: 3 MiB with a Content-Length."""
            payload = bytes(range(256)) * (3 * 4096)
            self.send_response(200)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _count(self) -> None:
            """``/_count``: how many requests this backend has answered (this one not counted)."""
            payload = str(served[0]).encode()
            self.send_response(200)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _call(self) -> None:
            """``/call?url=U``: GET U as an unmodified app would (through ``HTTP_PROXY`` when
            set, which urllib honours) and answer its status and body."""
            url = urllib.parse.unquote(self.path.split("=", 1)[1])
            try:
                with urllib.request.urlopen(url, timeout=10) as reply:
                    status, text = reply.status, reply.read().decode()
            except urllib.error.HTTPError as error:
                status, text = error.code, error.read().decode()
            payload = json.dumps({"status": status, "body": text}).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _read_body(self) -> bytes:
            if (self.headers.get("transfer-encoding") or "").lower() == "chunked":
                chunks: list[bytes] = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("content-length") or 0)
            return self.rfile.read(length) if length else b""

        def _answer(self) -> None:
            if self.path == "/_count":
                self._count()
                return
            with counting:
                served[0] += 1
                arrived[0] += 1
                gather = gathering is not None and arrived[0] <= args.gather
            if gather:
                assert gathering is not None
                gathering.wait(30)
            if self.path == "/stream":
                self._stream()
                return
            if self.path == "/big":
                self._big()
                return
            if self.path.startswith("/call?url="):
                self._call()
                return
            if self.path == "/release":
                released.set()
            body = self._read_body()
            if self.path == "/held":
                released.wait(30)
            if args.delay:
                time.sleep(args.delay)
            status = 503 if args.fail_rate and chance.random() < args.fail_rate else 200
            payload = json.dumps(
                {
                    "name": args.name,
                    "method": self.command,
                    "path": self.path,
                    "host": self.headers.get("host"),
                    "headers": {k.lower(): v for k, v in self.headers.items()},
                    "body": body[:1000].decode("utf-8", "replace"),
                    "body_length": len(body),
                    "body_sha256": hashlib.sha256(body).hexdigest(),
                }
            ).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-backend", args.name)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _answer  # noqa: N815

        def log_message(self, format: str, *values: object) -> None:
            return

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    print(f"READY {server.server_address[1]}", flush=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.shutdown()
    sys.exit(0)


if __name__ == "__main__":
    main()
