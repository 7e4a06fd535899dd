"""Fuzz target: the sidecar's HTTP/2 front end (tulle/proxy/h2_front.py, H2Front) fed frames
built with hyperframe and HPACK (:mod:`fuzz.support.h2_frames`) after a valid preface and
SETTINGS: it gets past the framing and the header decoding that raw bytes rarely do, to the
request heads, resets, windows and settings the front end acts on.

Input: bytes 0-5 as in :mod:`fuzz.h2_front`; the rest draws the frames.

Checked: everything :mod:`fuzz.h2_front` checks, and, knowing which streams the client opened
and reset: answers come only on streams the client opened; a request dispatched on a stream
neither side reset, on a connection the client keeps open and the front end did not close, is
answered (its response head is sent).
"""

from __future__ import annotations

from fuzz.support.checks import check, guarded
from fuzz.support.draw import Draw
from fuzz.support.runner import instrumented, main

with instrumented("tulle", "h2", "hpack", "hyperframe"):
    from fuzz.support import h2_drive, h2_frames
    from fuzz.support.loop import InputLoop


def one_input(data: bytes) -> None:
    """One fuzz input (see the module's docstring for its layout)."""
    draw = Draw(data)
    run = h2_drive.H2Run(draw)
    sent, client = h2_frames.client_bytes(draw)
    run.client_bytes(sent)
    InputLoop().run(run.connection.drive())
    written = run.check()
    for stream_id, stream in written.streams.items():
        if stream.heads:  # (a RST_STREAM may answer a frame on any stream)
            check(stream_id in client.opened, "h2front.unopened-stream", str(stream_id))
    if not run.connection.client_stays or run.transport.closed_by_protocol:
        return
    answered = {stream.tag for stream in written.streams.values()}
    reset = client.reset | h2_frames.reset_streams(sent)  # (raw frames may reset streams too)
    reset |= {sid for sid, stream in written.streams.items() if stream.reset is not None}
    for item in run.engine.dispatched:
        on = item.request.header(h2_frames.STREAM_HEADER)
        if item.cancelled or on is None or int(on) in reset:
            continue
        check(item.index in answered, "h2front.answered", f"request {item.index} on {on}")


if __name__ == "__main__":
    main("h2_frames", guarded(one_input))
