"""Reading back what an HTTP/2 front end wrote to its client, as the client would, without h2's
server state: the frames (hyperframe), the header blocks (one HPACK decoder, in order, across
CONTINUATION), and what each stream received. The checks of a stream's story (one final
answer, nothing after its end, no data before its head, only streams the client opened, none
answered past a GOAWAY's last stream) are made while reading."""

from __future__ import annotations

from dataclasses import dataclass, field

import hpack
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from fuzz.support.checks import check, fail
from fuzz.support.engine import ANSWER_HEADER

HEADER_SIZE = 9


@dataclass
class Stream:
    """What one stream carried to the client."""

    heads: list[list[tuple[str, str]]] = field(default_factory=list)  # each header block
    data: bytes = b""
    ended: bool = False  # END_STREAM seen
    reset: int | None = None  # the RST_STREAM error code, if reset

    @property
    def final(self) -> list[tuple[str, str]] | None:
        """The final response's headers (not 1xx), if sent."""
        for head in self.heads:
            status = dict(head).get(":status", "")
            if status and not status.startswith("1"):
                return head
        return None

    @property
    def tag(self) -> int | None:
        """The stand-in engine's answer index, if the final response is one of its answers."""
        final = self.final
        value = dict(final).get(ANSWER_HEADER) if final is not None else None
        return int(value) if value is not None else None


@dataclass
class Written:
    """Everything the client read: streams by id, and the GOAWAYs (last stream, code)."""

    streams: dict[int, Stream] = field(default_factory=dict)
    goaways: list[tuple[int, int]] = field(default_factory=list)


def _frames(data: bytes) -> list[Frame]:
    frames = []
    position = 0
    while position < len(data):
        header = memoryview(data[position : position + HEADER_SIZE])
        check(len(header) == HEADER_SIZE, "h2front.output-frame", "a frame header cut short")
        try:
            frame, length = Frame.parse_frame_header(header)
            body = data[position + HEADER_SIZE : position + HEADER_SIZE + length]
            check(len(body) == length, "h2front.output-frame", f"{frame!r} cut short")
            frame.parse_body(memoryview(body))
        except HyperframeError as error:
            fail("h2front.output-frame", f"{error!r} at byte {position}")
        frames.append(frame)
        position += HEADER_SIZE + length
    return frames


def read_frames(data: bytes) -> Written:
    """The client's view of ``data`` (the server's bytes from the first)."""
    frames = _frames(data)
    check(frames and isinstance(frames[0], SettingsFrame), "h2front.output-preface")
    decoder = hpack.Decoder()
    decoder.max_allowed_table_size = 2**32  # whatever the client allowed the server
    written = Written()
    block = b""
    block_stream = 0
    for frame in frames:
        stream_id = frame.stream_id
        if isinstance(frame, ContinuationFrame):
            check(stream_id == block_stream and block_stream, "h2front.output-continuation")
        elif block_stream:
            fail("h2front.output-continuation", f"{frame!r} inside a header block")
        if isinstance(frame, GoAwayFrame):
            written.goaways.append((frame.last_stream_id, frame.error_code))
            continue
        if stream_id == 0:
            continue
        if stream_id % 2 == 0:
            fail("h2front.stream-id", f"{frame!r} on a stream the client cannot open")
        stream = written.streams.setdefault(stream_id, Stream())
        if stream.ended or stream.reset is not None:
            # RST_STREAM may answer any frame the client sends on a closed stream (RFC 9113
            # 5.1), WINDOW_UPDATE and PRIORITY change nothing.
            allowed = isinstance(frame, RstStreamFrame | WindowUpdateFrame | PriorityFrame)
            check(allowed, "h2front.after-end-stream", f"{frame!r} on a finished stream")
        if isinstance(frame, HeadersFrame | ContinuationFrame):
            block += frame.data
            block_stream = stream_id
            if "END_HEADERS" in frame.flags:
                _head(decoder, block, stream, stream_id, written)
                block, block_stream = b"", 0
        elif isinstance(frame, DataFrame):
            check(stream.final is not None, "h2front.data-before-headers", f"stream {stream_id}")
            stream.data += frame.data
        elif isinstance(frame, RstStreamFrame) and stream.reset is None:
            stream.reset = frame.error_code
        if "END_STREAM" in frame.flags:
            stream.ended = True
    return written


def _head(
    decoder: hpack.Decoder, block: bytes, stream: Stream, stream_id: int, written: Written
) -> None:
    try:
        raw = decoder.decode(block, raw=True)
    except hpack.HPACKError as error:
        fail("h2front.output-hpack", repr(error))
    head = [(bytes(k).decode("latin-1"), bytes(v).decode("latin-1")) for k, v in raw]
    status = dict(head).get(":status")
    if status is not None and not status.startswith("1"):
        check(stream.final is None, "h2front.answer-once", f"two final responses on {stream_id}")
        for last, _ in written.goaways:
            check(
                stream_id <= last, "h2front.goaway-last-stream", f"{stream_id} after GOAWAY {last}"
            )
    elif status is None:
        check(stream.final is not None, "h2front.output-head", f"trailers first on {stream_id}")
    stream.heads.append(head)
