"""HTTP/2 helpers shared by the proxy's server and client sides (h2 does the framing): sending a
message's body and trailers as flow control allows."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import h2.connection
import h2.exceptions


def closed_by_goaway(conn: h2.connection.H2Connection) -> bool:
    """Whether a ProtocolError from ``receive_data`` came from frames that followed the peer's
    GOAWAY. h2 closes the connection as soon as a GOAWAY arrives and refuses every frame after
    it (python-hyper/h2#1181), so streams still in flight cannot finish: the caller reports the
    GOAWAY, not a protocol error."""
    return conn.state_machine.state is h2.connection.ConnectionState.CLOSED


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
