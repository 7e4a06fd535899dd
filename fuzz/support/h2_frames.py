"""HTTP/2 client frames built from fuzz input with hyperframe and one HPACK encoder (so header
blocks decode, in order, as the server's decoder expects): requests with drawn pseudo-headers
and headers (some malformed: spaces, uppercase, connection-specific names, pseudo-headers out of
order or twice), bodies, resets, SETTINGS (zero windows, odd sizes), PING, WINDOW_UPDATE,
PRIORITY, GOAWAY, CONTINUATION, and frames no client may send. :class:`Client` remembers which
streams it opened and reset, for the checks that need to know."""

from __future__ import annotations

import hpack
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    PushPromiseFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from fuzz.support.draw import Draw

METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"OPTIONS", b"CONNECT", b"G ET", b"", b"get")
PATHS = (
    b"/", b"/a?b=c", b"/greeter.Greeter/SayHello", b"*", b"", b"/a b", b"//admin",
    b"/%2e/admin", b"/./admin", b"http://web/", b"abc", b"/\x7f", b"/" + b"a" * 200,
)  # fmt: skip
AUTHORITIES = (b"web:8080", b"web", b"", b"a b", b"web:8080/x", b"\xe2\x82\xac", b"[::1]:80")
SCHEMES = (b"http", b"https", b"", b"ftp")
NAMES = (
    b"content-type", b"te", b"connection", b"transfer-encoding", b"host", b"content-length",
    b"x-a", b"X-Upper", b"x a", b"", b"x\x00", b"cookie", b"grpc-timeout", b"x-request-id",
    b"transfer_encoding", b"keep-alive", b"upgrade", b":protocol", b":status", b":path",
)  # fmt: skip
VALUES = (
    b"application/grpc", b"trailers", b"gzip", b"keep-alive", b"0", b"5", b"web:8080",
    b"\xe2\x82\xac", b"\xff", b" x ", b"a\r\nb", b"", b"1S", b"a=b; c=d",
)  # fmt: skip
SETTINGS = (
    (SettingsFrame.HEADER_TABLE_SIZE, (0, 4096, 2**32 - 1)),
    (SettingsFrame.ENABLE_PUSH, (0, 1, 2)),
    (SettingsFrame.MAX_CONCURRENT_STREAMS, (0, 1, 100, 2**31)),
    (SettingsFrame.INITIAL_WINDOW_SIZE, (0, 1, 65535, 2**31 - 1, 2**31)),
    (SettingsFrame.MAX_FRAME_SIZE, (16384, 16383, 2**24 - 1, 2**24)),
    (SettingsFrame.MAX_HEADER_LIST_SIZE, (0, 100, 2**32 - 1)),
    (SettingsFrame.ENABLE_CONNECT_PROTOCOL, (0, 1, 2)),
    (0xFF, (7,)),
)
RST_STREAM = 0x3
STREAM_HEADER = "x-fuzz-stream"  # the stream a request came on, as the engine sees it
ERROR_CODES = (0, 1, 2, 7, 8, 0xB, 0xFFFF)
INCREMENTS = (0, 1, 65535, 2**31 - 1)


class Client:
    """A client's side of the frames: its HPACK encoder and the streams it has used."""

    def __init__(self) -> None:
        self.encoder = hpack.Encoder()
        self.next_stream = 1
        self.opened: list[int] = []
        self.reset: set[int] = set()

    def stream(self, draw: Draw, new: bool = False) -> int:
        """A stream id: mostly a new one (for HEADERS) or one already opened, now and then
        one no client may use (0, even, far ahead)."""
        odd = draw.below(16)
        if odd == 15:
            return draw.pick((0, 2, 2**31 - 1, self.next_stream + 100))
        if new or not self.opened or odd < 6:
            stream_id = self.next_stream
            self.next_stream += 2
            self.opened.append(stream_id)
            return stream_id
        return draw.pick(self.opened)

    def header_block(self, draw: Draw, stream_id: int) -> bytes:
        """A request's header block: pseudo-headers then headers, with drawn faults, and
        ``x-fuzz-stream`` naming the stream (for the checks)."""
        pseudo = [
            (b":method", draw.pick(METHODS)),
            (b":scheme", draw.pick(SCHEMES)),
            (b":path", draw.pick(PATHS)),
            (b":authority", draw.pick(AUTHORITIES)),
        ]
        for _ in range(draw.below(3)):  # a pseudo-header missing or twice
            del pseudo[draw.below(len(pseudo))]
        if draw.chance(8):
            pseudo.append(draw.pick(pseudo) if pseudo else (b":method", b"GET"))
        headers = [(draw.pick(NAMES), draw.pick(VALUES)) for _ in range(draw.below(4))]
        if draw.chance(4):
            headers = [(b"content-type", b"application/grpc"), (b"te", b"trailers"), *headers]
        block = [*pseudo, *headers, (STREAM_HEADER.encode(), str(stream_id).encode())]
        if draw.chance(12):  # a header before the pseudo-headers
            block.insert(0, block.pop())
        return bytes(self.encoder.encode(block, huffman=draw.flag()))

    def frames(self, draw: Draw) -> list[bytes]:
        """One drawn step: a frame, a request (HEADERS, perhaps CONTINUATION and DATA), or
        raw bytes."""
        kind = draw.below(14)
        if kind <= 3:
            return self._request(draw)
        if kind == 4:
            data = draw.take(40)
            padded = ["PADDED"] if draw.chance(4) else []
            frame = DataFrame(1, data, pad_length=draw.below(4), flags=self._end(draw) + padded)
            return [on_stream(frame, self.stream(draw))]
        if kind == 5:
            stream_id = self.stream(draw)
            self.reset.add(stream_id)
            return [on_stream(RstStreamFrame(1, error_code=draw.pick(ERROR_CODES)), stream_id)]
        return [self._control(draw, kind)]

    def _control(self, draw: Draw, kind: int) -> bytes:
        """A frame of the connection, of priority or push, or raw bytes."""
        if kind == 6:
            if draw.chance(4):
                return SettingsFrame(0, flags=["ACK"]).serialize()
            settings: dict[int, int] = {}
            for _ in range(1 + draw.below(3)):
                key, values = draw.pick(SETTINGS)
                settings[key] = draw.pick(values)
            return SettingsFrame(0, settings=settings).serialize()
        if kind == 7:
            flags = ["ACK"] if draw.chance(4) else []
            return PingFrame(0, opaque_data=draw.take(8).ljust(8, b"\0"), flags=flags).serialize()
        if kind == 8:
            stream_id = draw.pick((0, self.stream(draw)))
            increment = draw.pick(INCREMENTS)
            return on_stream(WindowUpdateFrame(1, window_increment=increment), stream_id)
        if kind == 9:
            stream_id = self.stream(draw)
            depends = draw.pick((0, stream_id, 1))  # on itself: a PROTOCOL_ERROR
            frame = PriorityFrame(1, depends_on=depends, stream_weight=draw.byte())
            return on_stream(frame, stream_id)
        if kind == 10:
            return GoAwayFrame(0, last_stream_id=draw.pick((0, 1, 2**31 - 1))).serialize()
        if kind == 11:
            stream_id = self.stream(draw)
            block = self.header_block(draw, stream_id)
            push = PushPromiseFrame(1, promised_stream_id=2, data=block, flags=["END_HEADERS"])
            return on_stream(push, stream_id)
        if kind == 12:  # a frame header of any type, flags and length, then some bytes
            header = draw.take(9).ljust(9, b"\0")
            return header + draw.take(32)
        return draw.take(24)

    def _end(self, draw: Draw) -> list[str]:
        return ["END_STREAM"] if draw.flag() else []

    def _request(self, draw: Draw) -> list[bytes]:
        stream_id = self.stream(draw, new=not draw.chance(8))
        if stream_id not in self.opened:  # one no client may open: it tried anyway
            self.opened.append(stream_id)
        block = self.header_block(draw, stream_id)
        cut = draw.below(3) if len(block) > 2 else 0  # CONTINUATION frames that follow
        pieces = [block[i * len(block) // (cut + 1) : (i + 1) * len(block) // (cut + 1)]
                  for i in range(cut + 1)]  # fmt: skip
        body = b"" if draw.flag() else draw.take(40)
        flags = [] if body else self._end(draw)
        if not cut:
            flags.append("END_HEADERS")
        frames = [on_stream(HeadersFrame(1, pieces[0], flags=flags), stream_id)]
        for index, piece in enumerate(pieces[1:], start=1):
            last = ["END_HEADERS"] if index == cut else []
            frames.append(on_stream(ContinuationFrame(1, piece, flags=last), stream_id))
        if body:
            frames.append(on_stream(DataFrame(1, body, flags=["END_STREAM"]), stream_id))
        return frames


def on_stream(frame: Frame, stream_id: int) -> bytes:
    """``frame`` (made on stream 1: hyperframe refuses ids a frame may not have) on
    ``stream_id``, whatever the rules say."""
    data = frame.serialize()
    return data[:5] + stream_id.to_bytes(4, "big") + data[9:]


def client_bytes(draw: Draw) -> tuple[bytes, Client]:
    """The bytes of a drawn sequence of frames, and the client that sent them."""
    client = Client()
    out = b""
    for _ in range(1 + draw.below(10)):
        out += b"".join(client.frames(draw))
    return out, client


def reset_streams(data: bytes) -> set[int]:
    """The streams an RST_STREAM frame in ``data`` (the client's bytes after the preface)
    names, read frame by frame as the server reads them."""
    found: set[int] = set()
    position = 0
    while position + 9 <= len(data):
        length = int.from_bytes(data[position : position + 3], "big")
        if data[position + 3] == RST_STREAM:
            found.add(int.from_bytes(data[position + 5 : position + 9], "big") & 0x7FFFFFFF)
        position += 9 + length
    return found
