"""HTTP/2 helpers shared by the proxy's server and client sides (h2 does the framing): sending a
message's body and trailers as flow control allows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import h2.connection
import h2.exceptions

GOAWAY_TYPE = 0x7
_FRAME_HEADER = 9


@dataclass(frozen=True)
class Goaway:
    """The peer is going away: streams up to ``last_stream_id`` may still finish, later ones
    were never processed (RFC 9113 §6.8)."""

    last_stream_id: int
    error_code: int


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_SETTINGS, _PING = 0x4, 0x6  # the frame types that ask for an answer
FRAME_SIZE_ERROR = 0x6


class FrameError(Exception):
    """A frame the connection must end over: its error code and why."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


@dataclass
class GoawayFilter:
    """Takes the peer's GOAWAY frames out of the bytes read from a connection before h2 sees
    them. h2 closes a connection as soon as a GOAWAY arrives and refuses every frame after it
    (python-hyper/h2#1181), so the streams the peer still finishes would be lost; with the
    GOAWAY taken out, h2 reads on and the caller drains the connection itself. Only frame
    headers are read; bytes pass through as they come, except an incomplete frame header or
    GOAWAY, held until the rest arrives.

    A server's filter (:meth:`for_server`) also guards what a client sends: a frame longer
    than ``max_frame_size`` is refused at its header (FrameError; h2 would buffer the whole
    payload first, up to 16 MiB a frame), and the frames that ask for an answer (PING and
    SETTINGS without ACK) are counted in ``answers_wanted``."""

    _skip: int = 0  # bytes of the preface or the current frame's payload still to pass through
    _held: bytes = b""
    max_frame_size: int = 0  # 0: not checked
    answers_wanted: int = 0

    @classmethod
    def for_server(cls, max_frame_size: int = 16384) -> GoawayFilter:
        """A filter for a server's side: the client's preface passes first."""
        return cls(len(PREFACE), b"", max_frame_size)

    def feed(self, data: bytes) -> tuple[bytes, list[Goaway]]:
        """What to give h2 of ``data``, and the GOAWAYs taken out of it."""
        if self._held:
            data, self._held = self._held + data, b""
        size = len(data)
        position = min(self._skip, size)
        self._skip -= position
        if position == size:
            return data, []
        goaways: list[Goaway] = []
        kept: list[bytes] = []
        start = 0  # the beginning of the bytes not yet kept
        while position < size:
            if size - position < _FRAME_HEADER:
                self._held = data[position:]
                break
            length = int.from_bytes(data[position : position + 3], "big")
            if self.max_frame_size:
                self._guard(length, data[position + 3], data[position + 4])
            end = position + _FRAME_HEADER + length
            if data[position + 3] == GOAWAY_TYPE and end - position >= _FRAME_HEADER + 8:
                if end > size:
                    self._held = data[position:]
                    break
                payload = data[position + _FRAME_HEADER : end]
                last = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                goaways.append(Goaway(last, int.from_bytes(payload[4:8], "big")))
                kept.append(data[start:position])
                start = end
            elif end > size:
                self._skip = end - size
            position = min(end, size)
        stop = size - len(self._held)
        if start == 0 and stop == size:  # nothing taken out: no copy (compiled slices copy)
            return data, goaways
        kept.append(data[start:stop])
        return b"".join(kept) if len(kept) > 1 else kept[0], goaways

    def _guard(self, length: int, kind: int, flags: int) -> None:
        if length > self.max_frame_size:
            reason = f"frame of {length} bytes over the maximum of {self.max_frame_size}"
            raise FrameError(FRAME_SIZE_ERROR, reason)
        if kind in (_PING, _SETTINGS) and not flags & 0x1:  # not an ACK
            self.answers_wanted += 1


# RFC 9110 5.6.2: the characters of a token (a method, a header name).
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# What a request target may hold on an HTTP/1.1 request line: visible ASCII, no space.
_TARGET = bytes(range(0x21, 0x7F))


def _token(value: bytes) -> bool:
    """Whether ``value`` is a token (``translate`` deletes the allowed bytes, in C)."""
    return bool(value) and not value.translate(None, _TCHAR)


def request_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[str, str]] | str:
    """An HTTP/2 request's header block (bytes, as h2 gives it with no header encoding) as text
    headers that HTTP/1.1 can carry unchanged (bytes kept as they came: latin-1), or the reason
    it is refused: a ``:method`` that is not a token, a ``:path`` or ``:authority`` with
    spaces or control characters (copied into a request line they would split it), a header
    name that is not a token, more than one ``:authority`` or ``host``. h2 has already refused
    uppercase names, CR, LF and NUL. Names with an underscore are dropped (see
    :class:`tulle.codec.http1.RequestReader`)."""
    headers: list[tuple[str, str]] = []
    seen_host = False
    for name, value in raw:
        if name[:1] == b":":
            if name == b":method":
                if not _token(value):
                    return f"invalid :method {value[:40]!r}"
            elif name in (b":path", b":authority") and value.translate(None, _TARGET):
                return f"invalid {name.decode()} {value[:80]!r}"
        elif name == b"host" and value.translate(None, _TARGET):  # it stands for :authority
            return f"invalid host {value[:80]!r}"
        elif not _token(name):
            return f"invalid header name {name[:40]!r}"
        elif b"_" in name:
            continue
        elif name == b"host":
            if seen_host:
                return "more than one host header"
            seen_host = True
        headers.append((name.decode("latin-1"), value.decode("latin-1")))
    return headers


def wire_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Text headers as the bytes to send: latin-1, so bytes received on either protocol go out
    as they came (h2 would encode text as UTF-8); a value latin-1 cannot hold (from config)
    goes as UTF-8."""
    encoded = []
    for name, value in headers:
        try:
            encoded.append((name.encode("latin-1"), value.encode("latin-1")))
        except UnicodeEncodeError:
            encoded.append((name.encode("utf-8"), value.encode("utf-8")))
    return encoded


def text_headers(headers: Iterable[tuple[str | bytes, str | bytes]]) -> list[tuple[str, str]]:
    """h2's header pairs as text (names lowercase)."""
    return [
        (
            (k.decode("latin-1") if isinstance(k, bytes) else k).lower(),
            v.decode("latin-1") if isinstance(v, bytes) else v,
        )
        for k, v in headers
    ]


@dataclass
class _Outgoing:
    data: bytearray
    trailers: list[tuple[str, str]] | None
    end: bool
    closed: bool = True  # False while more data may follow (a streamed body)


@dataclass
class H2Sender:
    """Bodies waiting for flow-control window, per stream, on one connection: ``queued`` bytes
    in all. While ``paused`` (the peer is not reading what was written) nothing more is
    handed to h2."""

    conn: h2.connection.H2Connection
    outgoing: dict[int, _Outgoing] = field(default_factory=dict)
    queued: int = 0
    paused: bool = False

    def waiting(self, stream_id: int) -> int:
        """Bytes queued for ``stream_id``."""
        item = self.outgoing.get(stream_id)
        return len(item.data) if item is not None else 0

    def send(
        self, stream_id: int, body: bytes, trailers: list[tuple[str, str]] | None, end: bool = True
    ) -> None:
        """Queue ``body`` (then ``trailers``, or END_STREAM when ``end``) and send what fits."""
        self.outgoing[stream_id] = _Outgoing(bytearray(body), trailers, end)
        self.queued += len(body)
        self.pump(stream_id)

    def append(self, stream_id: int, data: bytes) -> None:
        """More of a streamed body: queue it and send what fits."""
        item = self.outgoing.setdefault(stream_id, _Outgoing(bytearray(), None, False, False))
        item.data.extend(data)
        self.queued += len(data)
        self.pump(stream_id)

    def close(self, stream_id: int, trailers: list[tuple[str, str]] | None) -> None:
        """A streamed body is complete: trailers (or END_STREAM) follow what is queued."""
        item = self.outgoing.setdefault(stream_id, _Outgoing(bytearray(), None, False, False))
        item.trailers, item.end, item.closed = trailers, True, True
        self.pump(stream_id)

    def pump(self, stream_id: int | None = None) -> None:
        """Send what the windows allow now (``None``: every stream, after a connection-level
        WINDOW_UPDATE)."""
        if self.paused:
            return
        for sid in [stream_id] if stream_id is not None else list(self.outgoing):
            item = self.outgoing.get(sid)
            if item is None:
                continue
            try:
                while item.data:
                    window = min(
                        self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size
                    )
                    if window <= 0:
                        break
                    chunk, item.data = bytes(item.data[:window]), item.data[window:]
                    self.queued -= len(chunk)
                    self.conn.send_data(sid, chunk)
                if item.data or not item.closed:
                    continue
                del self.outgoing[sid]
                if item.trailers:
                    self.conn.send_headers(sid, wire_headers(item.trailers), end_stream=True)
                elif item.end:
                    self.conn.end_stream(sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.forget(sid)

    def forget(self, stream_id: int) -> None:
        """The stream was reset: drop what it still had to send."""
        item = self.outgoing.pop(stream_id, None)
        if item is not None:
            self.queued -= len(item.data)
