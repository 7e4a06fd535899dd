"""The auth service, over gRPC: ``/auth.Auth/Check`` answers ``ok`` (raw bytes, no protobuf
needed). A plain grpcio server on $PORT."""

from __future__ import annotations

import os
import signal
import sys
import threading
from concurrent import futures

import grpc


def check(request: bytes, context: grpc.ServicerContext) -> bytes:
    return b"ok"


def main() -> None:
    handler = grpc.method_handlers_generic_handler(
        "auth.Auth", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    host = os.environ.get("HOST", "127.0.0.1")
    port = server.add_insecure_port(f"{host}:{os.environ.get('PORT', '50051')}")
    server.start()
    print(f"auth listening on {port}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop(1).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
