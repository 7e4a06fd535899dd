"""Stock grpcio on both ends of a proxyless mTLS call, for tests/e2e/test_grpc_mtls.py.

``server DIR``: a gRPC server with the credentials ``WorkloadCredentials.write_files`` left in
DIR (``grpc.ssl_server_credentials``, client certificates required and verified against the
bundle); ``/greeter.Greeter/SayHello`` answers ``<name>|<the caller's URI SAN>``. Prints
``READY <port>``; stops on SIGTERM.

``client TARGET``: calls ``TARGET`` (an ``xds:///`` name) with ``grpc.xds_channel_credentials``
(insecure fallback) — the cluster's transport socket says whether to speak mTLS, the bootstrap's
certificate providers (``GRPC_XDS_BOOTSTRAP_CONFIG``) give the files — and prints one JSON line
per call: ``{"ok", "reply" | "code", "detail"}``."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import grpc.experimental


def serve(directory: Path, name: str) -> None:
    key = (directory / "key.pem").read_bytes()
    chain = (directory / "cert-chain.pem").read_bytes()
    bundle = (directory / "root-cert.pem").read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=bundle, require_client_auth=True
    )

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        sans = context.auth_context().get("x509_subject_alternative_name", [])
        callers = ",".join(sorted(s.decode() for s in sans))
        return f"{name}|{callers}".encode()

    handler = grpc.method_handlers_generic_handler(
        "greeter.Greeter", {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"READY {port}", flush=True)
    stop.wait()
    server.stop(0.5).wait()


def call(target: str, count: int, seconds: float) -> None:
    credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
    channel = grpc.secure_channel(target, credentials)
    method = channel.unary_unary("/greeter.Greeter/SayHello")
    deadline = time.monotonic() + seconds
    for _ in range(count):
        if time.monotonic() > deadline:
            break
        try:
            reply = method(b"hi", timeout=5)
            record: dict[str, object] = {"ok": True, "reply": reply.decode()}
        except grpc.RpcError as error:
            record = {"ok": False, "code": error.code().name, "detail": error.details()}
        print(json.dumps(record), flush=True)
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server")
    server.add_argument("directory", type=Path)
    server.add_argument("--name", default="greeter")
    client = commands.add_parser("client")
    client.add_argument("target")
    client.add_argument("--count", type=int, default=5)
    client.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()
    if args.command == "server":
        serve(args.directory, args.name)
    else:
        call(args.target, args.count, args.seconds)
    sys.exit(0)


if __name__ == "__main__":
    main()
