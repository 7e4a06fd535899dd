"""A stock grpcio client on an ``xds:///`` target, for the end-to-end tests. It takes its whole
config from the control plane (``GRPC_XDS_BOOTSTRAP_CONFIG`` in its environment) and prints one
JSON line per call: ``{"i", "t", "ok", "backend" | "code", "detail"}``. Stops after ``--count``
calls or ``--seconds``, whichever comes first."""

from __future__ import annotations

import argparse
import json
import sys
import time

import grpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--header", action="append", default=[], help="name=value metadata")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()
    metadata = tuple(tuple(h.split("=", 1)) for h in args.header)
    channel = grpc.insecure_channel(args.target)
    call = channel.unary_unary("/greeter.Greeter/SayHello")
    deadline = time.monotonic() + args.seconds
    for index in range(args.count):
        if time.monotonic() > deadline:
            break
        record: dict[str, object] = {"i": index, "t": time.time()}
        try:
            reply = call(b"hi", metadata=metadata, timeout=args.timeout)
            record.update(ok=True, backend=reply.decode())
        except grpc.RpcError as error:
            record.update(ok=False, code=error.code().name, detail=error.details())
        print(json.dumps(record), flush=True)
        if args.interval:
            time.sleep(args.interval)
    channel.close()
    sys.exit(0)


if __name__ == "__main__":
    main()
