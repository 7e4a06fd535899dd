"""HTTP/1.1 byte streams built from fuzz input: pipelined requests (or responses), mostly well
formed, each part now and then replaced by one of the forms smuggling research uses
(Content-Length and Transfer-Encoding variants, obs-fold, bare CR and LF, chunk-size tricks,
trailers, Upgrade, Expect) or by raw fuzz bytes. httptools parses in C, where atheris sees no
coverage, so the grammar gets the fuzzer past the request line and into sequences of messages;
raw inputs (the targets' other mode) cover what the grammar misses. An input of zeros is one
plain request: every choice's first option is the ordinary one."""

from __future__ import annotations

from fuzz.support.draw import Draw

# Each part: ordinary spellings, then odd ones.
METHODS = (
    (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"),
    (b"CONNECT", b"TRACE", b"PRI", b"get", b"G\x00T", b""),
)
TARGETS = (
    (b"/", b"/a?b=c", b"/admin", b"http://web:8080/x?y", b"*"),
    (b"https://web/", b"web:443", b"/%2e/admin", b"//admin", b"/./admin", b"/x/../admin", b"",
     b"/a b", b"/\xff", b"http://", b"ftp://x/", b"/" + b"a" * 300),
)  # fmt: skip
VERSIONS = (
    (b"HTTP/1.1", b"HTTP/1.0"),
    (b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b"HTTP/11", b""),
)
NAMES = (
    (b"X-A", b"Accept", b"Content-Type", b"Host", b"Expect", b"X-Request-Id", b"Connection",
     b"Upgrade", b"TE", b"Trailer", b"Keep-Alive", b"Content-Length", b"Transfer-Encoding"),
    (b"Content_Length", b"Transfer_Encoding", b" Host", b"Host ", b"Proxy-Connection", b"",
     b"X\x00", b"\xe9"),
)  # fmt: skip
VALUES = (
    (b"1", b"web:8080", b"text/plain", b"100-continue", b"close", b"keep-alive", b"Upgrade",
     b"websocket", b"trailers", b"chunked", b"0", b"5", b"other:8080"),
    (b"-1", b"+5", b"0x10", b" 5", b"5, 5", b"gzip, chunked", b"chunked, gzip", b"identity",
     b"h2c", b"\x00", b"a\rb", b"99999999999999999999", b"", b"\xe2\x82\xac", b"chunked\x0b"),
)  # fmt: skip
EOLS = ((b"\r\n",), (b"\n", b"\r", b" \r\n", b"\r\r\n"))
SEPARATORS = ((b": ", b":"), (b" : ", b":\t", b": \t", b""))
CHUNK_EXTENSIONS = ((b"", b";a=b"), (b"; a", b";\x00", b" ;x", b";" + b"e" * 100))
STATUSES = (
    (b"200 OK", b"404 Not Found", b"204 No Content", b"304 Not Modified", b"500 Oops"),
    (b"100 Continue", b"101 Switching Protocols", b"103 Early Hints", b"404", b"999 x",
     b"099 x", b"2000 x", b"", b"200"),
)  # fmt: skip
FRAMINGS = (("none", "length", "chunked"), ("both", "two lengths", "short", "raw"))


def _part(draw: Draw, choices: tuple[tuple[bytes, ...], tuple[bytes, ...]]) -> bytes:
    """An ordinary spelling mostly; an odd one, or raw fuzz bytes, one time in eight."""
    roll = draw.below(16)
    if roll == 15:
        return draw.take(24)
    ordinary, odd = choices
    return draw.pick(odd) if roll >= 13 else draw.pick(ordinary)


def _framing(draw: Draw) -> str:
    ordinary, odd = FRAMINGS
    return draw.pick(odd) if draw.below(8) == 7 else draw.pick(ordinary)


def _header(draw: Draw, eol: bytes) -> bytes:
    text = _part(draw, NAMES) + _part(draw, SEPARATORS) + _part(draw, VALUES)
    if draw.below(16) == 15:  # obs-fold: a continuation line
        text += eol + draw.pick((b" ", b"\t")) + _part(draw, VALUES)
    return text + (_part(draw, EOLS) if draw.below(8) == 7 else eol)


def _size(draw: Draw, size: int) -> bytes:
    """A chunk size, mostly as written everywhere, now and then as a smuggler writes it."""
    spelling = draw.below(16)
    if spelling < 12:
        return b"%x" % size
    return (b"%X" % size, b"000%x" % size, b"0x%x" % size, b"%x " % size)[spelling - 12]


def _chunked(draw: Draw, body: bytes, eol: bytes) -> bytes:
    """``body`` in chunks, then the last chunk and trailers."""
    out = b""
    while body:
        size = 1 + draw.below(len(body))
        piece, body = body[:size], body[size:]
        ends = eol if draw.below(16) != 15 else draw.pick((b"", b"x", b"\n"))
        out += _size(draw, size) + _part(draw, CHUNK_EXTENSIONS) + eol + piece + ends
    out += draw.pick((b"0", b"0", b"00", b"0 ")) + _part(draw, CHUNK_EXTENSIONS) + eol
    for _ in range(draw.below(3)):  # trailers
        out += _header(draw, eol)
    return out + eol


def _framed(draw: Draw, eol: bytes) -> tuple[bytes, bytes]:
    """Framing headers and the body they frame (or contradict)."""
    body = draw.take(40)
    framing = _framing(draw)
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
    eol = _part(draw, EOLS)
    space = b" " if draw.below(8) != 7 else draw.pick((b"  ", b"\t"))
    line = _part(draw, METHODS) + space + _part(draw, TARGETS) + space + _part(draw, VERSIONS)
    head = line + eol
    if draw.below(8) != 7:
        head += b"Host: " + draw.pick((b"web:8080", b"web", b"", b"a b", b"web:8080, x")) + eol
    for _ in range(draw.below(5)):
        head += _header(draw, eol)
    framing, body = _framed(draw, eol)
    return head + framing + eol + body


def requests(draw: Draw) -> list[bytes]:
    """One to four pipelined requests, with raw bytes between them now and then (each its own
    part: joined, they are the stream)."""
    parts = []
    for _ in range(1 + draw.below(4)):
        parts.append(request(draw))
        if draw.below(16) == 15:
            parts.append(draw.take(16))
    return parts


def response(draw: Draw) -> bytes:
    """One response (possibly malformed), sometimes after an informational one."""
    eol = _part(draw, EOLS)
    out = b""
    if draw.below(6) == 5:
        out += b"HTTP/1.1 " + draw.pick((b"100 Continue", b"103 Early Hints")) + eol + eol
    out += _part(draw, VERSIONS) + b" " + _part(draw, STATUSES) + eol
    for _ in range(draw.below(4)):
        out += _header(draw, eol)
    framing, body = _framed(draw, eol)
    return out + framing + eol + body


def responses(draw: Draw) -> bytes:
    """One to three responses in a row, as a kept-alive upstream connection carries them."""
    return b"".join(response(draw) for _ in range(1 + draw.below(3)))
