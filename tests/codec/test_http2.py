"""The GOAWAY filter in front of h2: whatever way the bytes are cut, h2 gets every other frame
unchanged and the GOAWAYs come out with their last stream id and code."""

from __future__ import annotations

from hyperframe.frame import DataFrame, GoAwayFrame, HeadersFrame, PingFrame, WindowUpdateFrame

from tulle.codec.http2 import Goaway, GoawayFilter


def frames() -> tuple[bytes, bytes, list[Goaway]]:
    """A stream of frames with two GOAWAYs (as grpcio's graceful stop sends), what h2 must get
    of it, and the GOAWAYs."""
    headers = HeadersFrame(1, data=b"\x88", flags=["END_HEADERS"]).serialize()
    first = GoAwayFrame(0, last_stream_id=2**31 - 1, error_code=0).serialize()
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    data = DataFrame(1, data=b"x" * 300).serialize()
    second = GoAwayFrame(0, last_stream_id=3, error_code=0, additional_data=b"bye").serialize()
    trailers = HeadersFrame(1, data=b"\x88", flags=["END_HEADERS", "END_STREAM"]).serialize()
    window = WindowUpdateFrame(0, window_increment=1000).serialize()
    wire = headers + first + ping + data + second + trailers + window
    return wire, headers + ping + data + trailers + window, [Goaway(2**31 - 1, 0), Goaway(3, 0)]


def feed_in_pieces(pieces: list[bytes]) -> tuple[bytes, list[Goaway]]:
    goaway_filter = GoawayFilter()
    passed, seen = b"", []
    for piece in pieces:
        out, goaways = goaway_filter.feed(piece)
        passed += out
        seen += goaways
    return passed, seen


def test_goaways_are_taken_out_whatever_the_cuts():
    wire, expected, goaways = frames()
    assert feed_in_pieces([wire]) == (expected, goaways)
    for cut in range(1, len(wire)):
        assert feed_in_pieces([wire[:cut], wire[cut:]]) == (expected, goaways), cut
    assert feed_in_pieces([wire[i : i + 1] for i in range(len(wire))]) == (expected, goaways)
    for size in (7, 9, 10, 17, 64):
        pieces = [wire[i : i + size] for i in range(0, len(wire), size)]
        assert feed_in_pieces(pieces) == (expected, goaways), size


def test_bytes_without_a_goaway_pass_as_they_are():
    _, expected, _ = frames()
    goaway_filter = GoawayFilter()
    out, goaways = goaway_filter.feed(expected)
    assert out is expected  # no copy when there is nothing to take out
    assert goaways == []
