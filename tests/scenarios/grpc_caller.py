"""The parity suite's proxyless caller: a stock grpcio client (``xds:///`` targets, config from
the control plane through ``GRPC_XDS_BOOTSTRAP_CONFIG``) that takes calls on stdin and answers
on stdout, one JSON line each, so a test can send many calls (some at once) to one process.

In: ``{"id": 1, "target": "xds:///web:8080", "path": "/greeter.Greeter/SayHello", "headers":
{"x-user": "jason"}, "timeout": 10}`` (the path is the method called).
Out: ``{"id": 1, "ok": true, "reply": "...", "metadata": {...}}`` (the reply as text, the
initial metadata) or ``{"id": 1, "ok": false, "code": "UNAVAILABLE", "detail": "..."}``.

``--xds-credentials``: channels with ``grpc.xds_channel_credentials`` (plain text as fallback), so
a cluster whose transport socket says mTLS gets it, with the certificate files the bootstrap's
provider names (``tulle agent`` keeps them)."""

from __future__ import annotations

import json
import sys
import threading
from typing import Any

import grpc
import grpc.experimental

TIMEOUT = 10.0


def main() -> None:
    channels: dict[str, grpc.Channel] = {}
    write = threading.Lock()
    credentials = None
    if "--xds-credentials" in sys.argv[1:]:
        fallback = grpc.experimental.insecure_channel_credentials()
        credentials = grpc.xds_channel_credentials(fallback)

    def answer(message: dict[str, Any]) -> None:
        with write:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def finished(call_id: int, future: grpc.Future) -> None:
        try:
            reply = future.result().decode()
            metadata = dict(future.initial_metadata() or ())
            answer({"id": call_id, "ok": True, "reply": reply, "metadata": metadata})
        except grpc.RpcError as error:
            answer({"id": call_id, "ok": False, "code": error.code().name,
                    "detail": error.details()})  # fmt: skip

    for line in sys.stdin:
        command = json.loads(line)
        target = command["target"]
        channel = channels.get(target)
        if channel is None:
            channel = channels[target] = (
                grpc.insecure_channel(target)
                if credentials is None
                else grpc.secure_channel(target, credentials)
            )
        call = channel.unary_unary(command.get("path", "/greeter.Greeter/SayHello"))
        metadata = tuple(command.get("headers", {}).items())
        future = call.future(b"hi", metadata=metadata, timeout=command.get("timeout", TIMEOUT))
        future.add_done_callback(lambda f, call_id=command["id"]: finished(call_id, f))
    for channel in channels.values():
        channel.close()


if __name__ == "__main__":
    main()
