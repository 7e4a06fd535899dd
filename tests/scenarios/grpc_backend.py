"""The parity suite's gRPC backend, the counterpart of ``tests/e2e/http_backend.py``: answers
every unary method with JSON of its name, the method path and the metadata it received (as the
HTTP backend echoes path and headers), sets ``x-backend`` in its initial metadata, and counts
calls (``/scenario.Backend/Count`` answers the count and is not counted). ``--fail-rate`` fails
that share with UNAVAILABLE ("<name> failed on purpose"); ``--delay`` waits before answering.
``--xds-port PORT``: a proxyless server instead, ``grpc.server(..., xds=True)`` on that port with
``grpc.xds_server_credentials`` (its Listener, mTLS mode and RBAC from the control plane, its
certificates from the bootstrap's provider), whose answer adds ``peer``: the caller's URI SAN as
the handshake showed it. Prints ``READY <port>``; stops on SIGTERM."""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc

COUNT = "/scenario.Backend/Count"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--xds-port", type=int, default=0)
    args = parser.parse_args()
    chance = random.Random()
    calls = [0]
    lock = threading.Lock()

    def answer(method: str) -> Any:
        def handle(request: bytes, context: grpc.ServicerContext) -> bytes:
            if method == COUNT:
                return str(calls[0]).encode()
            with lock:
                calls[0] += 1
            if args.delay:
                time.sleep(args.delay)
            if args.fail_rate and chance.random() < args.fail_rate:
                # No initial metadata first: a call that has received headers is committed
                # and grpcio would not retry it (gRFC A6).
                context.abort(grpc.StatusCode.UNAVAILABLE, f"{args.name} failed on purpose")
            context.send_initial_metadata((("x-backend", args.name),))
            metadata = dict(context.invocation_metadata())
            answer = {"name": args.name, "path": method, "headers": metadata}
            if args.xds_port:
                sans = context.auth_context().get("x509_subject_alternative_name", [])
                answer["peer"] = ",".join(sorted(san.decode() for san in sans))
            return json.dumps(answer).encode()

        return grpc.unary_unary_rpc_method_handler(handle)

    class EveryMethod(grpc.GenericRpcHandler):  # type: ignore[misc]
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            return answer(details.method)

    if args.xds_port:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32), xds=True)
        server.add_generic_rpc_handlers((EveryMethod(),))
        credentials = grpc.xds_server_credentials(grpc.insecure_server_credentials())
        server.add_secure_port(f"127.0.0.1:{args.xds_port}", credentials)
        port = args.xds_port  # serving once the control plane sent its Listener
    else:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        server.add_generic_rpc_handlers((EveryMethod(),))
        port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"READY {port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(0.5).wait()
    sys.exit(0)


if __name__ == "__main__":
    main()
