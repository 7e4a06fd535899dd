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


@dataclass
class GoawayFilter:
    """Takes the peer's GOAWAY frames out of the bytes read from a connection before h2 sees
    them. h2 closes a connection as soon as a GOAWAY arrives and refuses every frame after it
    (python-hyper/h2#1181), so the streams the peer still finishes would be lost; with the
    GOAWAY taken out, h2 reads on and the caller drains the connection itself. Only frame
    headers are read; bytes pass through as they come, except an incomplete frame header or
    GOAWAY, held until the rest arrives."""

    _skip: int = 0  # bytes of the current frame's payload still to pass through
    _held: bytes = b""

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
            end = position + _FRAME_HEADER + int.from_bytes(data[position : position + 3], "big")
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
    """Bodies waiting for flow-control window, per stream, on one connection."""

    conn: h2.connection.H2Connection
    outgoing: dict[int, _Outgoing] = field(default_factory=dict)

    def send(
        self, stream_id: int, body: bytes, trailers: list[tuple[str, str]] | None, end: bool = True
    ) -> None:
        """Queue ``body`` (then ``trailers``, or END_STREAM when ``end``) and send what fits."""
        self.outgoing[stream_id] = _Outgoing(bytearray(body), trailers, end)
        self.pump(stream_id)

    def append(self, stream_id: int, data: bytes) -> None:
        """More of a streamed body: queue it and send what fits."""
        item = self.outgoing.setdefault(stream_id, _Outgoing(bytearray(), None, False, False))
        item.data.extend(data)
        self.pump(stream_id)

    def close(self, stream_id: int, trailers: list[tuple[str, str]] | None) -> None:
        """A streamed body is complete: trailers (or END_STREAM) follow what is queued."""
        item = self.outgoing.setdefault(stream_id, _Outgoing(bytearray(), None, False, False))
        item.trailers, item.end, item.closed = trailers, True, True
        self.pump(stream_id)

    def pump(self, stream_id: int | None = None) -> None:
        """Send what the windows allow now (``None``: every stream, after a connection-level
        WINDOW_UPDATE)."""
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
                    self.conn.send_data(sid, chunk)
                if item.data or not item.closed:
                    continue
                del self.outgoing[sid]
                if item.trailers:
                    self.conn.send_headers(sid, item.trailers, end_stream=True)
                elif item.end:
                    self.conn.end_stream(sid)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                self.outgoing.pop(sid, None)

    def forget(self, stream_id: int) -> None:
        """The stream was reset: drop what it still had to send."""
        self.outgoing.pop(stream_id, None)
