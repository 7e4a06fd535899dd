"""Many gRPC streaming calls over one HTTP/2 connection, as a sans-IO client with no HTTP/2
library: the load generator of the ADS fan-out benchmark (and of the ADS server's burst test).

A load generator must cost less than what it measures: grpcio's asyncio clients took about 1.7 s
of CPU to take a push to 5,000 of them, as much as the control plane then spent on it; these
take 0.15-0.2 s for 10,000 (two worker processes). This client does only what a gRPC
client of a well-behaved server needs: the preface and SETTINGS, one header block reused for
every call (literal, never indexed: it leaves the server's HPACK table alone), length-prefixed
messages in DATA frames within the server's flow-control windows, PING and SETTINGS
acknowledgements, and the server's header blocks decoded (HPACK) to read a call's status. It
announces windows large enough that it never has to send WINDOW_UPDATE (2 GiB per connection).

Feed received bytes to :meth:`Connection.receive`, which returns :class:`Event` values; write
what :meth:`Connection.data_to_send` returns."""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    0x0, 0x1, 0x3, 0x4, 0x6, 0x7, 0x8, 0x9,
)  # fmt: skip
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
SETTINGS_ENABLE_PUSH, SETTINGS_INITIAL_WINDOW_SIZE, SETTINGS_MAX_FRAME_SIZE = 0x2, 0x4, 0x5
MAX_WINDOW = 2**31 - 1
DEFAULT_WINDOW = 65_535


def frame(kind: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame."""
    length = len(payload)
    return (
        bytes((length >> 16 & 0xFF, length >> 8 & 0xFF, length & 0xFF, kind, flags))
        + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
        + payload
    )


@dataclass(frozen=True, slots=True)
class Event:
    """Something the server did: ``message`` (one gRPC message on ``stream_id``), ``ended``
    (the call ended: ``status`` is grpc-status, or ``reset``/``goaway`` and a detail), ``pong``
    (the server acknowledged our PING)."""

    kind: str
    stream_id: int = 0
    data: bytes = b""
    status: str = ""
    detail: str = ""


@dataclass(slots=True)
class _Stream:
    window: int
    pending: deque[bytes] = field(default_factory=deque)  # DATA payloads waiting for window
    buffer: bytearray = field(default_factory=bytearray)
    headers: dict[str, str] = field(default_factory=dict)


class Connection:
    """The client side of one HTTP/2 connection carrying gRPC calls to ``path``."""

    def __init__(self, authority: str, path: str) -> None:
        self._out = bytearray(
            PREFACE
            + frame(SETTINGS, 0, 0, struct.pack(">HIHI", SETTINGS_ENABLE_PUSH, 0,
                                               SETTINGS_INITIAL_WINDOW_SIZE, MAX_WINDOW))
            + frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", MAX_WINDOW - DEFAULT_WINDOW))
        )  # fmt: skip
        headers = [
            (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
            ("content-type", "application/grpc"), ("te", "trailers"),
        ]  # fmt: skip
        encoder = hpack.Encoder()
        self._block = encoder.encode([hpack.NeverIndexedHeaderTuple(n, v) for n, v in headers])
        self._decoder = hpack.Decoder()
        self._decoder.max_allowed_table_size = 4096
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._window = DEFAULT_WINDOW  # the server's connection-level window for our DATA
        self._initial = DEFAULT_WINDOW  # ... and each new stream's, from its SETTINGS
        self._max_frame = 16_384
        self._inbox = bytearray()
        self._header_block: tuple[int, int, bytearray] | None = None  # stream, flags, bytes
        self._blocked: deque[int] = deque()  # streams with DATA waiting, in order

    def data_to_send(self) -> bytes:
        """Bytes to write to the socket."""
        data = bytes(self._out)
        self._out.clear()
        return data

    def open(self) -> int:
        """Start a call; returns its stream id."""
        stream_id = self._next_id
        self._next_id += 2
        self._streams[stream_id] = _Stream(self._initial)
        self._out += frame(HEADERS, END_HEADERS, stream_id, self._block)
        return stream_id

    def send(self, stream_id: int, message: bytes) -> None:
        """Send one gRPC message (uncompressed) on the call ``stream_id``."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        data = b"\x00" + len(message).to_bytes(4, "big") + message
        for start in range(0, len(data), self._max_frame):
            stream.pending.append(data[start : start + self._max_frame])
        self._flush(stream_id, stream)

    def ping(self, payload: bytes = b"tulle-pg") -> None:
        """Send a PING; the server's acknowledgement arrives as a ``pong`` event, after
        everything it received before it."""
        self._out += frame(PING, 0, 0, payload)

    def _flush(self, stream_id: int, stream: _Stream) -> None:
        while stream.pending:
            chunk = stream.pending[0]
            if len(chunk) > min(self._window, stream.window):
                if stream_id not in self._blocked:
                    self._blocked.append(stream_id)
                return
            stream.pending.popleft()
            self._window -= len(chunk)
            stream.window -= len(chunk)
            self._out += frame(DATA, 0, stream_id, chunk)

    def _unblock(self) -> None:
        for _ in range(len(self._blocked)):
            stream_id = self._blocked.popleft()
            stream = self._streams.get(stream_id)
            if stream is not None:
                self._flush(stream_id, stream)

    def receive(self, data: bytes) -> list[Event]:
        """Take bytes from the socket; returns what the server did."""
        inbox = self._inbox
        inbox += data
        events: list[Event] = []
        offset = 0
        while len(inbox) - offset >= 9:
            length = int.from_bytes(inbox[offset : offset + 3], "big")
            if len(inbox) - offset < 9 + length:
                break
            kind, flags = inbox[offset + 3], inbox[offset + 4]
            stream_id = int.from_bytes(inbox[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
            payload = bytes(inbox[offset + 9 : offset + 9 + length])
            offset += 9 + length
            self._frame(kind, flags, stream_id, payload, events)
        del inbox[:offset]
        return events

    def _frame(
        self, kind: int, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if kind == DATA:
            stream = self._streams.get(stream_id)
            if stream is not None:
                stream.buffer += _unpad(flags, payload)
                self._messages(stream_id, stream, events)
                if flags & END_STREAM:
                    self._end(stream_id, events, "reset", "DATA ended the stream")
        elif kind == HEADERS:
            block = _unpad(flags, payload)
            if flags & PRIORITY:
                block = block[5:]
            self._header_block = (stream_id, flags, bytearray(block))
            if flags & END_HEADERS:
                self._headers(events)
        elif kind == CONTINUATION and self._header_block is not None:
            self._header_block[2].extend(payload)
            if flags & END_HEADERS:
                self._headers(events)
        elif kind == SETTINGS and not flags & ACK:
            self._settings(payload)
            self._out += frame(SETTINGS, ACK, 0)
        elif kind == PING and not flags & ACK:
            self._out += frame(PING, ACK, 0, payload)
        elif kind == PING:
            events.append(Event("pong", data=payload))
        elif kind == WINDOW_UPDATE:
            increment = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
            if stream_id == 0:
                self._window += increment
            elif (stream := self._streams.get(stream_id)) is not None:
                stream.window += increment
            self._unblock()
        elif kind == RST_STREAM:
            code = int.from_bytes(payload[:4], "big")
            self._end(stream_id, events, "reset", f"RST_STREAM code {code}")
        elif kind == GOAWAY:
            for open_id in list(self._streams):
                self._end(open_id, events, "goaway", payload[8:].decode(errors="replace"))

    def _settings(self, payload: bytes) -> None:
        for start in range(0, len(payload) - 5, 6):
            key, value = struct.unpack_from(">HI", payload, start)
            if key == SETTINGS_INITIAL_WINDOW_SIZE:
                for stream in self._streams.values():
                    stream.window += value - self._initial
                self._initial = value
            elif key == SETTINGS_MAX_FRAME_SIZE:
                self._max_frame = value
        self._unblock()

    def _headers(self, events: list[Event]) -> None:
        assert self._header_block is not None
        stream_id, flags, block = self._header_block
        self._header_block = None
        decoded = self._decoder.decode(bytes(block), raw=False)
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        stream.headers.update((str(name), str(value)) for name, value in decoded)
        if flags & END_STREAM:
            status = stream.headers.get("grpc-status", "")
            self._end(stream_id, events, status, stream.headers.get("grpc-message", ""))

    def _messages(self, stream_id: int, stream: _Stream, events: list[Event]) -> None:
        buffer = stream.buffer
        start = 0
        while len(buffer) - start >= 5:
            length = int.from_bytes(buffer[start + 1 : start + 5], "big")
            if len(buffer) - start < 5 + length:
                break
            events.append(
                Event("message", stream_id, bytes(buffer[start + 5 : start + 5 + length]))
            )
            start += 5 + length
        del buffer[:start]

    def _end(self, stream_id: int, events: list[Event], status: str, detail: str) -> None:
        if self._streams.pop(stream_id, None) is not None:
            events.append(Event("ended", stream_id, status=status, detail=detail))


def _unpad(flags: int, payload: bytes) -> bytes:
    if flags & PADDED and payload:
        return payload[1 : len(payload) - payload[0]]
    return payload
