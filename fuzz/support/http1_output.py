"""Reading back what an HTTP/1.1 front end wrote to its client, strictly and without the code
under test: status lines, headers (tokens, no CR or LF in values), bodies by Content-Length or
chunked coding (none for HEAD, 1xx, 204, 304). Which request a response answers comes from the
stand-in engine's tag; a response without one is the front end's own (or the tunneler's), framed
by its Content-Length, or bodiless if it answers a HEAD."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fuzz.support.checks import check, fail
from fuzz.support.engine import ANSWER_HEADER

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


@dataclass
class Written:
    """One response as the client reads it."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    tag: int | None  # the stand-in engine's answer index, if it is one of its answers
    complete: bool = True  # False: the body was cut short by the end of the connection

    def header(self, name: str) -> str | None:
        """The first value of header ``name``."""
        return next((value for key, value in self.headers if key == name), None)

    @property
    def closes(self) -> bool:
        """Whether it says the connection ends after it."""
        return (self.header("connection") or "").lower() == "close"


def _head(data: bytes, start: int) -> tuple[int, list[tuple[str, str]], int]:
    end = data.find(b"\r\n\r\n", start)
    check(end >= 0, "http1front.output-head", lambda: f"no end of head in {data[start:][:200]!r}")
    lines = data[start:end].split(b"\r\n")
    status_line = lines[0]
    check(
        len(status_line) >= 12 and status_line[:9] == b"HTTP/1.1 " and status_line[9:12].isdigit(),
        "http1front.output-status-line",
        repr(status_line),
    )
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(b": ")
        check(colon and set(name) <= TCHAR, "http1front.output-header", repr(line))
        check(b"\r" not in value and b"\n" not in value, "http1front.output-header", repr(line))
        headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))
    return int(status_line[9:12]), headers, end + 4


HEX = frozenset(b"0123456789abcdefABCDEF")


def _chunked(data: bytes, start: int) -> tuple[bytes, int, bool]:
    """A chunked body from ``start``: the body, where it ends, and whether it is complete (a
    body cut short reaches the end of the data; the caller judges whether that may be)."""
    body = b""
    while start < len(data):
        eol = data.find(b"\r\n", start)
        check(eol >= 0, "http1front.output-chunked", "a chunk size line without its end")
        size_text = data[start:eol]
        if size_text.startswith(b"HTTP/1.1 1"):
            fail("http1front.interim-inside-body", repr(data[start:][:60]))
        check(size_text and set(size_text) <= HEX, "http1front.output-chunked", repr(size_text))
        size = int(size_text, 16)
        start = eol + 2
        if size == 0:
            check(data[start : start + 2] == b"\r\n", "http1front.output-chunked", "trailers")
            return body, start + 2, True
        check(data[start + size : start + size + 2] == b"\r\n", "http1front.output-chunked")
        body += data[start : start + size]
        start += size + 2
    return body, start, False


def read_responses(data: bytes, method_of: Callable[[int], str]) -> list[Written]:
    """Every response in ``data``; ``method_of`` gives a tagged answer's request method."""
    out: list[Written] = []
    position = 0
    while position < len(data):
        status, headers, position = _head(data, position)
        tag_text = next((v for k, v in headers if k == ANSWER_HEADER), None)
        tag = int(tag_text) if tag_text is not None else None
        written = Written(status, headers, b"", tag)
        out.append(written)
        if status < 200 or status in (204, 304):
            continue
        if tag is None:  # the front end's own answer (or a tunnel's): always a Content-Length
            length = written.header("content-length")
            check(length is not None, "http1front.output-body", "no Content-Length")
            assert length is not None
            if data.startswith(b"HTTP/1.1 ", position) or position == len(data):
                continue  # an answer to HEAD (the front end's bodies never start so)
            written.body = data[position : position + int(length)]
            check(len(written.body) == int(length), "http1front.output-body", "short body")
            position += int(length)
            continue
        if method_of(tag) == "HEAD":
            rest = data[position : position + 40]
            if not (rest == b"" or rest.startswith(b"HTTP/1.1 ")):
                fail("http1front.head-answer-body", f"{rest!r} after a HEAD's answer")
            continue
        length = written.header("content-length")
        if (written.header("transfer-encoding") or "") == "chunked":
            written.body, position, written.complete = _chunked(data, position)
        elif length is not None:
            written.body = data[position : position + int(length)]
            check(len(written.body) == int(length), "http1front.output-body", "short body")
            interleaved = b"HTTP/1.1 1" in written.body
            check(not interleaved, "http1front.interim-inside-body", repr(written.body[:60]))
            position += int(length)
        else:  # delimited by the end of the connection
            written.body, position = data[position:], len(data)
    return out
