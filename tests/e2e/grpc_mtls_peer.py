"""Stock grpcio on both ends of a proxyless mTLS call, for tests/e2e/test_grpc_mtls.py.

``server DIR``: a gRPC server with the credentials ``WorkloadCredentials.write_files`` left in
DIR (``grpc.ssl_server_credentials``, client certificates required and verified against the
bundle); ``/greeter.Greeter/SayHello`` answers ``<name>|<the caller's URI SAN>``. Prints
``READY <port>``; stops on SIGTERM.

``client TARGET``: calls ``TARGET`` (an ``xds:///`` name) with ``grpc.xds_channel_credentials``
(insecure fallback) — the cluster's transport socket says whether to speak mTLS, the bootstrap's
certificate providers (``GRPC_XDS_BOOTSTRAP_CONFIG``) give the files — and prints one JSON line
per call: ``{"ok", "reply" | "code", "detail"}``; ``--fresh`` makes each call on a new channel
(a new handshake), ``--interval`` waits between calls; SIGTERM ends it after the current call.

``xds-server PORT``: ``grpc.server(..., xds=True)`` with ``grpc.xds_server_credentials``: its
Listener (mTLS mode, RBAC) comes from the control plane, its certificates from the bootstrap's
``default`` provider; answers ``<name>|<caller's URI SAN>|<caller's certificate serial>``."""

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
from cryptography import x509


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


def _caller(context: grpc.ServicerContext) -> str:
    """The caller's URI SANs and its certificate's serial (hex), as the handshake showed them."""
    auth = context.auth_context()
    sans = ",".join(sorted(s.decode() for s in auth.get("x509_subject_alternative_name", [])))
    pem = auth.get("x509_pem_cert", [b""])[0]
    if not pem:
        return sans
    return f"{sans}|{x509.load_pem_x509_certificate(pem).serial_number:x}"


def serve_xds(port: int, name: str, host: str = "127.0.0.1") -> None:
    """An ``xds=True`` server on ``host``:``port``: its Listener (and with it mTLS and RBAC)
    from the control plane, its certificates from the bootstrap's provider."""

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        return f"{name}|{_caller(context)}".encode()

    handler = grpc.method_handlers_generic_handler(
        "greeter.Greeter", {"SayHello": grpc.unary_unary_rpc_method_handler(say_hello)}
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler], xds=True)
    credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
    server.add_secure_port(f"{host}:{port}", credentials)
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"READY {port}", flush=True)
    stop.wait()
    server.stop(0.5).wait()


def call(
    target: str, count: int, seconds: float, interval: float = 0.0, fresh: bool = False
) -> None:
    """``count`` calls within ``seconds``; ``fresh``: each on a new channel (a new handshake, so
    with the certificate files as they are now)."""
    credentials = grpc.xds_channel_credentials(grpc.experimental.insecure_channel_credentials())
    channel = grpc.secure_channel(target, credentials)
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    for _ in range(count):
        if time.monotonic() > deadline or stop.is_set():
            break
        if fresh:
            channel.close()
            channel = grpc.secure_channel(target, credentials)
        try:
            reply = channel.unary_unary("/greeter.Greeter/SayHello")(b"hi", timeout=5)
            record: dict[str, object] = {"ok": True, "reply": reply.decode()}
        except grpc.RpcError as error:
            record = {"ok": False, "code": error.code().name, "detail": error.details()}
        print(json.dumps(record), flush=True)
        if interval:
            stop.wait(interval)
    channel.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    server = commands.add_parser("server")
    server.add_argument("directory", type=Path)
    server.add_argument("--name", default="greeter")
    xds_server = commands.add_parser("xds-server")
    xds_server.add_argument("port", type=int)
    xds_server.add_argument("--name", default="greeter")
    xds_server.add_argument("--host", default="127.0.0.1")
    client = commands.add_parser("client")
    client.add_argument("target")
    client.add_argument("--count", type=int, default=5)
    client.add_argument("--seconds", type=float, default=30.0)
    client.add_argument("--interval", type=float, default=0.0)
    client.add_argument("--fresh", action="store_true")
    args = parser.parse_args()
    if args.command == "server":
        serve(args.directory, args.name)
    elif args.command == "xds-server":
        serve_xds(args.port, args.name, args.host)
    else:
        call(args.target, args.count, args.seconds, args.interval, args.fresh)
    sys.exit(0)


if __name__ == "__main__":
    main()
