"""Fuzz target: the sidecar's HTTP/2 front end (tulle/proxy/h2_front.py, H2Front) with raw
bytes after a valid client preface and SETTINGS, driven without a socket
(:mod:`fuzz.support.h2_drive`); :mod:`fuzz.h2_frames` builds well-formed frames instead.

Input: byte 0 how the bytes are cut into reads, bytes 1-4 how the stand-in engine answers
requests 0-3 (then again from 4), byte 5 options (gRPC-style answers, a drain half-way, how the
connection ends); the rest is what the client sends after its SETTINGS.

Checked, beyond "nothing raises out of the protocol methods, a loop callback or a task": what
the client reads is frames and header blocks a client can decode (HPACK state carried across
them), with a SETTINGS first; each stream gets at most one final answer, no data before it,
nothing after its end or reset, none past a GOAWAY's last stream, only on streams the client
can open; each answer once, with its body (or reset, if the engine cut it) and its trailers;
the request the engine sees can go into HTTP/1.1 unchanged (token method, origin path, no
spaces or controls in path and authority, token names, one host, no connection-specific
headers); each request recorded once; nothing in flight, no task left, the connection
forgotten when it is over.
"""

from __future__ import annotations

from fuzz.support.checks import guarded
from fuzz.support.draw import Draw
from fuzz.support.runner import instrumented, main

with instrumented("tulle", "h2", "hpack", "hyperframe"):
    from fuzz.support import h2_drive


def one_input(data: bytes) -> None:
    """One fuzz input (see the module's docstring for its layout)."""
    h2_drive.one_input(data, Draw.rest)


if __name__ == "__main__":
    main("h2_front", guarded(one_input), dict_name="h2")
