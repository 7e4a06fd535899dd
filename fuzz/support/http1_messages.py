"""HTTP/1.1 byte streams built from fuzz input: pipelined requests (or responses) whose parts are
drawn from the forms smuggling research uses (Content-Length and Transfer-Encoding variants,
obs-fold, bare CR and LF, chunk-size tricks, trailers, Upgrade, Expect), with raw fuzz bytes
mixed in. httptools parses in C, where atheris sees no coverage, so the grammar gets the fuzzer
past the request line; raw inputs (the targets' other mode) cover what the grammar misses."""

from __future__ import annotations

from fuzz.support.draw import Draw

METHODS = (
    b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"CONNECT", b"PATCH", b"TRACE",
    b"PRI", b"get", b"G\x00T", b"",
)  # fmt: skip
TARGETS = (
    b"/", b"/a?b=c", b"*", b"http://web:8080/x?y", b"https://web/", b"web:443", b"/%2e/admin",
    b"//admin", b"/./admin", b"/x/../admin", b"", b"/a b", b"/\xff", b"http://", b"ftp://x/",
    b"/" + b"a" * 300,
)  # fmt: skip
VERSIONS = (
    b"HTTP/1.1", b"HTTP/1.0", b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ",
    b"HTTP/11", b"",
)  # fmt: skip
NAMES = (
    b"Host", b"Content-Length", b"Transfer-Encoding", b"Connection", b"Upgrade", b"Expect",
    b"X-Request-Id", b"Trailer", b"TE", b"Keep-Alive", b"Content_Length", b"Transfer_Encoding",
    b" Host", b"Host ", b"x-a", b"Proxy-Connection", b"Content-Type", b"", b"X\x00", b"\xe9",
)  # fmt: skip
VALUES = (
    b"web:8080", b"0", b"5", b"-1", b"+5", b"0x10", b" 5", b"5, 5", b"chunked", b"gzip, chunked",
    b"chunked, gzip", b"identity", b"close", b"keep-alive", b"Upgrade", b"websocket", b"h2c",
    b"100-continue", b"x-a", b"other:8080", b"\x00", b"a\rb", b"99999999999999999999", b"",
    b"\xe2\x82\xac", b"chunked\x0b",
)  # fmt: skip
EOLS = (b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b" \r\n", b"\r\r\n")
SEPARATORS = (b": ", b":", b" : ", b":\t", b": \t", b"")
CHUNK_EXTENSIONS = (b"", b";a=b", b"; a", b";\x00", b" ;x", b";" + b"e" * 100)
STATUSES = (
    b"200 OK", b"100 Continue", b"101 Switching Protocols", b"103 Early Hints", b"204 No Content",
    b"304 Not Modified", b"404", b"500 Oops", b"999 x", b"099 x", b"2000 x", b"", b"200",
)  # fmt: skip

FRAMINGS = ("none", "length", "chunked", "both", "two lengths", "short", "raw")


def _line(draw: Draw, options: tuple[bytes, ...]) -> bytes:
    """A part from ``options``, or (now and then) raw fuzz bytes."""
    if draw.chance(8):
        return draw.take(24)
    return draw.pick(options)


def _header(draw: Draw, eol: bytes) -> bytes:
    name = _line(draw, NAMES)
    value = _line(draw, VALUES)
    text = name + draw.pick(SEPARATORS) + value
    if draw.chance(16):  # obs-fold: a continuation line
        text += eol + draw.pick((b" ", b"\t")) + _line(draw, VALUES)
    return text + draw.pick(EOLS if draw.chance(8) else (eol,))


def _chunked(draw: Draw, body: bytes, eol: bytes) -> bytes:
    """``body`` in chunks with drawn size spellings, then the last chunk and trailers."""
    out = b""
    while body:
        size = 1 + draw.below(len(body))
        piece, body = body[:size], body[size:]
        spelling = draw.below(8)
        if spelling == 0:
            token = b"%X" % size
        elif spelling == 1:
            token = b"000%x" % size
        elif spelling == 2:
            token = b"0x%x" % size
        elif spelling == 3:
            token = b"%x " % size
        elif spelling == 4:
            token = _line(draw, (b"-1", b"ffffffffffffffffffff", b"", b"g"))
        else:
            token = b"%x" % size
        out += token + draw.pick(CHUNK_EXTENSIONS) + eol + piece + draw.pick((eol, eol, b"", b"x"))
    out += draw.pick((b"0", b"0", b"00", b"0 ")) + draw.pick(CHUNK_EXTENSIONS) + eol
    for _ in range(draw.below(3)):  # trailers
        out += _header(draw, eol)
    return out + eol


def _framed(draw: Draw, eol: bytes) -> tuple[bytes, bytes]:
    """Framing headers and the body they frame (or contradict)."""
    body = draw.take(40)
    framing = draw.pick(FRAMINGS)
    length = b"Content-Length: %d" % len(body) + eol
    chunked = b"Transfer-Encoding: chunked" + eol
    if framing == "none":
        return b"", b""
    if framing == "length":
        return length, body
    if framing == "chunked":
        return chunked, _chunked(draw, body, eol)
    if framing == "both":
        return length + chunked, _chunked(draw, body, eol)
    if framing == "two lengths":
        return length + b"Content-Length: %d" % (len(body) + 1) + eol, body
    if framing == "short":  # the length says less than follows: the rest is the next request
        return b"Content-Length: %d" % (len(body) // 2) + eol, body
    return b"", body


def request(draw: Draw) -> bytes:
    """One request (possibly malformed)."""
    eol = draw.pick(EOLS) if draw.chance(8) else b"\r\n"
    space = draw.pick((b" ", b" ", b"  ", b"\t"))
    line = _line(draw, METHODS) + space + _line(draw, TARGETS) + space + _line(draw, VERSIONS)
    head = line + eol
    if not draw.chance(8):
        head += b"Host: " + draw.pick((b"web:8080", b"web", b"", b"a b", b"web:8080, x")) + eol
    for _ in range(draw.below(5)):
        head += _header(draw, eol)
    framing, body = _framed(draw, eol)
    return head + framing + eol + body


def requests(draw: Draw) -> bytes:
    """One to four pipelined requests, with raw bytes between them now and then."""
    out = b""
    for _ in range(1 + draw.below(4)):
        out += request(draw)
        if draw.chance(16):
            out += draw.take(16)
    return out


def response(draw: Draw) -> bytes:
    """One response (possibly malformed), sometimes after an informational one."""
    eol = draw.pick(EOLS) if draw.chance(8) else b"\r\n"
    out = b""
    if draw.chance(6):
        out += b"HTTP/1.1 " + draw.pick((b"100 Continue", b"103 Early Hints")) + eol + eol
    out += _line(draw, VERSIONS) + b" " + _line(draw, STATUSES) + eol
    for _ in range(draw.below(4)):
        out += _header(draw, eol)
    framing, body = _framed(draw, eol)
    return out + framing + eol + body


def responses(draw: Draw) -> bytes:
    """One to three responses in a row, as a kept-alive upstream connection carries them."""
    return b"".join(response(draw) for _ in range(1 + draw.below(3)))
