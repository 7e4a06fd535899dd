"""Fuzz target: the sidecar's HTTP/1.1 front end (tulle/proxy/http_front.py, Http1Front), driven
without a socket through its asyncio.Protocol methods, on a fake transport, with a stand-in
engine that answers each request as the input says (:mod:`fuzz.support.engine`).

Input: byte 0 the mode (even: the rest is raw client bytes; odd: requests from the grammar of
:mod:`fuzz.support.http1_messages`), byte 1 how the bytes are cut into reads, bytes 2-5 how
the engine answers requests 0-3 (then again from 4), byte 6 options: bit 0 a tunneler that
refuses upgrades (else none), bit 1 a drain half-way, bits 2-3 how the connection ends
(:mod:`fuzz.support.connection`).
Between reads the engine takes a step and the loop a few turns; nothing is read while the
front end has paused reading.

Checked, beyond "nothing raises out of the protocol methods, a loop callback or a task":
- every request dispatched is answered at most once, in request order, with its own body
  (chunked coding or Content-Length as written), recorded exactly once (answered, or the client
  gone), and, on a connection the client keeps open and no response closes, answered at all;
- what the client reads parses strictly: status lines, headers without CR/LF, bodies as framed;
  nothing follows ``Connection: close`` (nor a cut body);
- no request is dispatched once the connection is closing; the request the engine sees has a
  token method, an origin path, header names that are tokens, values without CR, LF or NUL,
  no hop-by-hop headers, and an X-Request-Id;
- when it is over, nothing is in flight and the connection is forgotten.
"""

from __future__ import annotations

from fuzz.support.checks import check, guarded
from fuzz.support.draw import Draw, split
from fuzz.support.runner import instrumented, main

with instrumented("tulle"):
    from fuzz.support import http1_messages
    from fuzz.support.connection import Connection
    from fuzz.support.engine import Behaviour, Engine
    from fuzz.support.http1_output import TCHAR, Written, read_responses
    from fuzz.support.loop import InputLoop
    from fuzz.support.recorder import CountingRecorder
    from fuzz.support.transport import FakeTransport
    from tulle.codec.http1 import HOP_BY_HOP
    from tulle.engine.message import Request, Response
    from tulle.proxy.http_front import Http1Front
    from tulle.proxy.in_flight import InFlight
    from tulle.proxy.recording import Destination
    from tulle.proxy.tcp import TcpPipe


def check_request(request: Request) -> None:
    """What the engine is given is what an upstream must be able to read one way only."""
    method = request.method.encode("latin-1")
    check(method and set(method) <= TCHAR, "http1front.request-method", repr(request.method))
    path_ok = request.path[:1] == "/" or request.path == "*"
    check(path_ok, "http1front.request-path", repr(request.path))
    check(not {" ", "\r", "\n", "\0"} & set(request.path), "http1front.request-path", request.path)
    for name, value in request.headers:
        check(set(name.encode("latin-1")) <= TCHAR, "http1front.request-header", repr(name))
        check(not {"\r", "\n", "\0"} & set(value), "http1front.request-header", repr(value))
        check(name not in HOP_BY_HOP, "http1front.request-hop-by-hop", name)
    check(request.header("x-request-id") is not None, "http1front.request-id")


async def refuse_tunnel(
    request: Request, destination: Destination, transport: object
) -> TcpPipe | Response:
    """A tunneler whose upstream refuses the upgrade."""
    return Response(502, [("content-length", "0")], b"")


class Run:
    """One input's connection: the front end, its transport, the stand-in engine."""

    def __init__(self, draw: Draw) -> None:
        mode, seed = draw.byte(), draw.byte()
        answers = [Behaviour(draw.byte() % len(Behaviour)) for _ in range(4)]
        options = draw.byte()
        self.engine = Engine(lambda index: answers[index % 4])
        self.engine.inspect = self.check_request
        self.recorder = CountingRecorder()
        self.in_flight = InFlight()
        tunnel = refuse_tunnel if options & 1 else None
        front = Http1Front("fuzz", self.engine.dispatch, self.recorder, self.in_flight,
                           tunnel=tunnel)  # fmt: skip
        self.transport = FakeTransport(front)
        stream = draw.rest() if mode % 2 == 0 else b"".join(http1_messages.requests(draw))
        self.connection = Connection(
            "Http1Front", "http1front", front, self.engine, self.in_flight, self.transport,
            split(stream, seed), draining=bool(options & 2), ending=options >> 2 & 3,
        )  # fmt: skip

    def check_request(self, request: Request) -> None:
        """A request reaches the engine only from an open connection, and well formed."""
        check(not self.transport.closing, "http1front.dispatch-after-close", repr(request))
        check_request(request)

    def check(self) -> None:
        """The checks of the module's docstring, on what was written and recorded."""
        if self.engine.violations:
            raise self.engine.violations[0]
        dispatched = self.engine.dispatched
        written = read_responses(
            bytes(self.transport.written), lambda i: dispatched[i].request.method
        )
        final = [w for w in written if w.status >= 200]
        tags = [w.tag for w in final if w.tag is not None]
        check(len(tags) == len(set(tags)), "http1front.answer-once", str(tags))
        check(tags == sorted(tags), "http1front.answer-order", str(tags))
        cut = {item.index for item in dispatched if item.behaviour == Behaviour.CUT}
        for position, response in enumerate(final):
            if response.closes or response.tag in cut:
                check(position == len(final) - 1, "http1front.after-close", str(tags))
        for response in final:
            if response.tag is not None:
                self.check_answer(response)
        for item in dispatched:
            count = self.recorder.count(item.request)
            check(count == 1, "http1front.recorded-once", f"request {item.index}: {count}")
        closed = any(w.closes or w.tag in cut for w in final)
        if self.connection.client_stays and not closed:
            missing = [item.index for item in dispatched if item.index not in tags]
            check(not missing, "http1front.answered", f"requests {missing} not answered")
        check(self.in_flight.count == 0, "http1front.in-flight", str(self.in_flight.count))
        check(not self.in_flight.connections, "http1front.connection-forgotten")

    def check_answer(self, response: Written) -> None:
        assert response.tag is not None
        item = self.engine.dispatched[response.tag]
        if item.request.method == "HEAD":
            return
        if item.behaviour == Behaviour.CUT or not self.connection.client_stays:
            check(item.body.startswith(response.body), "http1front.answer-body", repr(response))
            chunked = response.header("transfer-encoding") == "chunked"  # (HTTP/1.0 cannot tell)
            if item.behaviour == Behaviour.CUT and chunked:
                check(not response.complete, "http1front.cut-body", "a cut body ends as whole")
        else:
            body_ok = response.body == item.body and response.complete
            check(body_ok, "http1front.answer-body", lambda: f"{response.body!r} for {item.body!r}")


def one_input(data: bytes) -> None:
    """One fuzz input (see the module's docstring for its layout)."""
    loop = InputLoop()
    run = Run(Draw(data))
    loop.run(run.connection.drive())
    run.check()


if __name__ == "__main__":
    main("http1_front", guarded(one_input), dict_name="http")
