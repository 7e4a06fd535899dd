"""Driving the HTTP/2 front end (tulle/proxy/h2_front.py) without a socket, for both HTTP/2
targets: the client's bytes (a valid preface and SETTINGS, then what the target makes of its
input) cut into reads, the stand-in engine answering as the input says, the loop turning
between reads; then the checks on what the client read and what the front end recorded.

The options byte: bit 0 gRPC-style answers (trailers), bit 1 a drain half-way, bits 2-3 how
the connection ends (:mod:`fuzz.support.connection`)."""

from __future__ import annotations

from collections.abc import Callable

from hyperframe.frame import SettingsFrame

from fuzz.support.checks import check
from fuzz.support.connection import Connection
from fuzz.support.draw import Draw, split
from fuzz.support.engine import Behaviour, Engine
from fuzz.support.h2_output import Written, read_frames
from fuzz.support.loop import InputLoop
from fuzz.support.recorder import CountingRecorder
from fuzz.support.transport import FakeTransport
from tulle.engine.message import Request
from tulle.proxy.h2_front import H2Front
from tulle.proxy.in_flight import InFlight

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SettingsFrame(0).serialize()
TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
CONNECTION_SPECIFIC = frozenset(
    {"connection", "transfer-encoding", "keep-alive", "proxy-connection", "upgrade"}
)


def check_request(request: Request) -> None:
    """What the engine is given must go into an HTTP/1.1 request unchanged and unambiguous."""
    method = request.method.encode("latin-1")
    check(method and set(method) <= TOKEN | set(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
          "h2front.request-method", repr(request.method))  # fmt: skip
    path = request.path
    check(path[:1] == "/" or path == "*", "h2front.request-path", repr(path))
    for text, what in (
        (path, "h2front.request-path"),
        (request.authority, "h2front.request-authority"),
    ):
        check(not any(c <= " " or c == "\x7f" for c in text), what, repr(text))
    hosts = 0
    for name, value in request.headers:
        check(name and set(name.encode("latin-1")) <= TOKEN, "h2front.request-header", repr(name))
        check(not {"\r", "\n", "\0"} & set(value), "h2front.request-header", repr(value))
        check(name not in CONNECTION_SPECIFIC, "h2front.request-connection-header", name)
        hosts += name == "host"
    check(hosts <= 1, "h2front.request-host", f"{hosts} host headers")


class H2Run:
    """One input's HTTP/2 connection."""

    def __init__(self, draw: Draw) -> None:
        self.seed = draw.byte()
        answers = [Behaviour(draw.byte() % len(Behaviour)) for _ in range(4)]
        options = draw.byte()
        self.engine = Engine(lambda index: answers[index % 4], trailers=bool(options & 1))
        self.engine.inspect = self.check_request
        self.recorder = CountingRecorder()
        self.in_flight = InFlight()
        front = H2Front("fuzz", self.engine.dispatch, self.recorder, self.in_flight)
        self.transport = FakeTransport(front)
        self.connection = Connection(
            "H2Front", "h2front", front, self.engine, self.in_flight, self.transport, [],
            draining=bool(options & 2), ending=options >> 2 & 3,
        )  # fmt: skip

    def client_bytes(self, data: bytes) -> None:
        """What the client sends after its preface and SETTINGS."""
        self.connection.pieces = split(PREFACE + data, self.seed)

    def check_request(self, request: Request) -> None:
        """A request reaches the engine only from an open connection, and well formed."""
        check(not self.transport.closing, "h2front.dispatch-after-close", repr(request))
        check_request(request)

    def check(self) -> Written:
        """The checks common to both targets; returns what the client read."""
        if self.engine.violations:
            raise self.engine.violations[0]
        written = read_frames(bytes(self.transport.written))
        tags = [s.tag for s in written.streams.values() if s.tag is not None]
        check(len(tags) == len(set(tags)), "h2front.answer-once", str(tags))
        dispatched = self.engine.dispatched
        for stream in written.streams.values():
            if stream.tag is None or stream.tag >= len(dispatched):
                continue
            item = dispatched[stream.tag]
            if item.behaviour == Behaviour.CUT:
                check(not stream.ended, "h2front.cut-body", "a cut body ends as whole")
            elif stream.ended and item.request.method != "HEAD":
                check(stream.data == item.body, "h2front.answer-body", repr(stream.data))
                if self.engine.trailers:
                    check(len(stream.heads) == 2, "h2front.answer-trailers", str(stream.heads))
        for item in dispatched:
            count = self.recorder.count(item.request)
            check(count == 1, "h2front.recorded-once", f"request {item.index}: {count}")
        check(self.in_flight.count == 0, "h2front.in-flight", str(self.in_flight.count))
        check(not self.in_flight.connections, "h2front.connection-forgotten")
        return written


def one_input(data: bytes, client_bytes: Callable[[Draw], bytes]) -> None:
    """One input: the options from its first bytes, the client's bytes from the rest."""
    draw = Draw(data)
    run = H2Run(draw)
    run.client_bytes(client_bytes(draw))
    InputLoop().run(run.connection.drive())
    run.check()
