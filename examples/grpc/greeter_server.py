"""A plain gRPC server with no Tulle import, for the proxyless demo and the end-to-end tests.

``/greeter.Greeter/SayHello`` answers with this server's name (raw bytes, no protobuf needed);
``/greeter.Greeter/Peer`` with the caller's address as gRPC sees it (which connection it came
on) and how many calls this server was serving at that moment (``peer|N``); ``Serving`` with
how many ``SayHello`` and ``Wait`` calls it is serving now (so that a test can wait until its
call has arrived). ``--fail-rate`` fails that share of calls with UNAVAILABLE; ``--delay`` waits
that many seconds before answering. Prints ``READY <port>`` once serving; stops on SIGTERM."""

from __future__ import annotations

import argparse
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc

Handler = Callable[[bytes, grpc.ServicerContext], bytes]


class Serving:
    """Counts the calls of the handlers it wraps while they run."""

    def __init__(self) -> None:
        self.now = 0
        self.lock = threading.Lock()

    def counted(self, handler: Handler) -> Handler:
        def serve(request: bytes, context: grpc.ServicerContext) -> bytes:
            with self.lock:
                self.now += 1
            try:
                return handler(request, context)
            finally:
                with self.lock:
                    self.now -= 1

        return serve

    def serving(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            return str(self.now).encode()


class Cancellations:
    """``Wait`` answers after 5 s unless its caller cancels the call first; ``Cancelled`` says
    how many did (a proxy in between must pass the cancellation on)."""

    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    def wait(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        ended = threading.Event()
        context.add_callback(ended.set)  # the call ends: cancelled, or answered below
        ended.wait(5)
        if not context.is_active():
            with self.lock:
                self.count += 1
        return b"waited"

    def cancelled(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        with self.lock:
            return str(self.count).encode()


def counted_calls(say_hello: Handler) -> dict[str, grpc.RpcMethodHandler]:
    """``SayHello`` and ``Wait``, counted while they run, with ``Serving`` and ``Cancelled``."""
    calls, cancellations = Serving(), Cancellations()
    return {
        "SayHello": grpc.unary_unary_rpc_method_handler(calls.counted(say_hello)),
        "Wait": grpc.unary_unary_rpc_method_handler(calls.counted(cancellations.wait)),
        "Serving": grpc.unary_unary_rpc_method_handler(calls.serving),
        "Cancelled": grpc.unary_unary_rpc_method_handler(cancellations.cancelled),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--grace", type=float, default=0.5, help="seconds calls get on SIGTERM")
    args = parser.parse_args()
    chance = random.Random()

    def say_hello(request: bytes, context: grpc.ServicerContext) -> bytes:
        if args.delay:
            time.sleep(args.delay)
        if args.fail_rate and chance.random() < args.fail_rate:
            context.abort(grpc.StatusCode.UNAVAILABLE, f"{args.name} failed on purpose")
        return args.name.encode()

    serving = [0]
    counting = threading.Lock()

    def peer(request: bytes, context: grpc.ServicerContext) -> bytes:
        with counting:
            serving[0] += 1
            at_once = serving[0]
        try:
            if args.delay:
                time.sleep(args.delay)
            return f"{context.peer()}|{at_once}".encode()
        finally:
            with counting:
                serving[0] -= 1

    released = threading.Event()

    def stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        """Server streaming: one message now, the rest once ``Release`` is called."""
        yield f"{args.name}:first".encode()
        released.wait(30)
        for index in range(3):
            yield f"{args.name}:{index}".encode()

    def chat(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        """Bidirectional streaming: each message answered as soon as it arrives."""
        for message in requests:
            yield args.name.encode() + b":" + message

    def release(request: bytes, context: grpc.ServicerContext) -> bytes:
        released.set()
        return b"released"

    handler = grpc.method_handlers_generic_handler(
        "greeter.Greeter",
        {
            **counted_calls(say_hello),
            "Peer": grpc.unary_unary_rpc_method_handler(peer),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Release": grpc.unary_unary_rpc_method_handler(release),
            "Chat": grpc.stream_stream_rpc_method_handler(chat),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"127.0.0.1:{args.port}")
    server.start()
    print(f"READY {port}", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop(args.grace).wait()  # GOAWAY; calls in flight get the grace to finish
    sys.exit(0)


if __name__ == "__main__":
    main()
