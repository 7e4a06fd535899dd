"""Fuzz target: the HTTP/1.1 codec (tulle/codec/http1.py), requests and responses.

Input: byte 0 chooses the mode (0 raw requests, 1 requests from the grammar of
:mod:`fuzz.support.http1_messages`, 2 raw responses, 3 responses from the grammar), byte 1 how
the stream is cut into reads (:func:`fuzz.support.draw.split`), byte 2's low bit whether the
responses answer a HEAD; the rest is the stream, or what the grammar draws from.

Checked for every input, beyond "nothing raises":
- the events come in order: head, body pieces, end, per message; at most one ProtocolError (or
  Upgraded), last, after which the parser is failed and takes nothing more;
- the same events whether the stream comes whole or cut into reads (the same bytes after an
  upgrade, too);
- a head never carries what a smuggler needs: a header name that is not a token, a value with
  CR, LF or NUL, Content-Length beside Transfer-Encoding, two Content-Lengths; a message with a
  Content-Length has exactly that many body bytes, one with neither framing has none; answers to
  HEAD and 1xx/204/304 have no body;
- a head the proxy re-serializes (request_head / response_head, hop-by-hop headers dropped) is
  read back as the same head, so what the proxy forwards is read one way only;
- requests from the grammar that each read alone as one complete request read the same when
  pipelined: nothing of one (trailers, a half-read body) carries over into the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fuzz.support.checks import calling, check, fail, guarded
from fuzz.support.draw import Draw, split
from fuzz.support.runner import instrumented, main

with instrumented("tulle"):
    from fuzz.support import http1_messages
    from tulle.codec.http1 import (
        Body,
        EndOfMessage,
        Event,
        ProtocolError,
        RequestHead,
        RequestParser,
        ResponseHead,
        ResponseParser,
        Upgraded,
        end_to_end,
        request_head,
        response_head,
    )

TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
REQUEST_STATUSES = {400, 414, 431}


@dataclass
class Message:
    """One message's events, folded: its head, its body, whether it ended."""

    head: RequestHead | ResponseHead
    body: bytes = b""
    ended: bool = False


@dataclass
class Folded:
    """A stream's events, folded into messages and how the stream stopped."""

    messages: list[Message]
    error: int | None = None  # a ProtocolError's status
    upgraded: bytes | None = None  # the bytes after an upgrade


def _head_fields(head: RequestHead | ResponseHead) -> tuple[object, ...]:
    if isinstance(head, RequestHead):
        return (
            head.method, head.target, head.version, head.headers, head.keep_alive, head.upgrade,
            head.host, head.length, head.chunked, head.hop_by_hop, head.expect_continue,
            head.request_id,
        )  # fmt: skip
    return (
        head.status, head.reason, head.headers, head.keep_alive, head.length, head.framed,
        head.hop_by_hop,
    )  # fmt: skip


def fold(events: Sequence[Event]) -> Folded:
    """Check the order of ``events`` and fold them into messages."""
    folded = Folded([])
    current: Message | None = None
    for index, event in enumerate(events):
        stopped = folded.error is not None or folded.upgraded is not None
        check(not stopped, "http1.event-order", f"{event!r} after the end of parsing")
        if isinstance(event, RequestHead | ResponseHead):
            check(current is None, "http1.event-order", "a head before the previous message ended")
            current = Message(event)
            folded.messages.append(current)
        elif isinstance(event, Body):
            if current is None:
                fail("http1.event-order", "body outside a message")
            check(event.data, "http1.event-order", "an empty body piece")
            current.body += event.data
        elif isinstance(event, EndOfMessage):
            if current is None:
                fail("http1.event-order", "end outside a message")
            current.ended, current = True, None
        elif isinstance(event, ProtocolError):
            check(index == len(events) - 1, "http1.event-order", "a ProtocolError not last")
            folded.error = event.status
        else:
            assert isinstance(event, Upgraded)
            check(index == len(events) - 1, "http1.event-order", "an Upgraded not last")
            folded.upgraded = event.data
    return folded


def same(whole: Folded, pieces: Folded) -> None:
    """The stream read whole and read in pieces gave the same messages."""
    heads = [_head_fields(m.head) for m in whole.messages]
    cut = [_head_fields(m.head) for m in pieces.messages]
    check(heads == cut, "http1.split-heads", lambda: f"{heads} whole, {cut} in pieces")
    bodies = [(m.body, m.ended) for m in whole.messages]
    cut_bodies = [(m.body, m.ended) for m in pieces.messages]
    check(bodies == cut_bodies, "http1.split-bodies", lambda: f"{bodies} / {cut_bodies}")
    detail = f"error {whole.error} whole, {pieces.error} in pieces"
    check(whole.error == pieces.error, "http1.split-error", detail)
    check(whole.upgraded == pieces.upgraded, "http1.split-upgrade", "bytes after the upgrade")


def check_head(head: RequestHead | ResponseHead) -> None:
    """Nothing a smuggler needs gets through the head."""
    names = [name for name, _ in head.headers]
    for name, value in head.headers:
        check(name and set(name.encode("latin-1")) <= TCHAR, "http1.header-name", repr(name))
        check(not {"\r", "\n", "\0"} & set(value), "http1.header-value", repr(value))
    check(not ("content-length" in names and "transfer-encoding" in names), "http1.cl-and-te")
    check(names.count("content-length") <= 1, "http1.two-content-lengths")
    if isinstance(head, ResponseHead):
        check(100 <= head.status <= 999, "http1.status-range", str(head.status))
    else:
        method, target = head.method, head.target
        check(method and set(method.encode("latin-1")) <= TCHAR, "http1.method", repr(method))
        check(not {" ", "\r", "\n", "\0"} & set(target), "http1.target", repr(target))
        hosts = [value for name, value in head.headers if name == "host"]
        check(head.host == (hosts[0] if hosts else None), "http1.first-host")


def check_body(message: Message, head_request: bool) -> None:
    """The body is what the framing says."""
    head = message.head
    if isinstance(head, ResponseHead) and (
        head_request or head.status < 200 or head.status in (204, 304)
    ):
        check(message.body == b"", "http1.bodiless-response-body", repr(message.body[:40]))
        check(message.ended, "http1.bodiless-response-ended")
        return
    if isinstance(head, RequestHead) and head.upgrade:
        return  # a tunnel from the end of the head (the front end refuses CONNECT, and an
        # Upgrade request with a body, whose bytes llhttp leaves to the tunnel)
    if head.length is not None and message.ended:
        detail = f"{len(message.body)} bytes for Content-Length {head.length}"
        check(len(message.body) == head.length, "http1.content-length", detail)
    if isinstance(head, RequestHead) and head.length is None and not head.chunked:
        check(message.body == b"", "http1.unframed-body", repr(message.body[:40]))


def reread_request(head: RequestHead) -> None:
    """The head the proxy would forward is read back the same (origin-form targets: the
    proxy refuses CONNECT and sends only the path of an absolute-form one)."""
    if head.target[:1] != "/":
        return
    headers = end_to_end(head.headers)
    with calling("request_head"):
        data = request_head(head.method, head.target, headers)
    events = RequestParser().feed(data)
    again = events[0] if events else None
    check(isinstance(again, RequestHead), "http1.reread-request", f"{data!r} read as {events}")
    assert isinstance(again, RequestHead)
    same = (again.method, again.target, again.headers) == (head.method, head.target, headers)
    check(same, "http1.reread-request", lambda: f"{data!r} read back as {again.headers}")


def reread_response(head: ResponseHead, head_request: bool) -> None:
    """The head the proxy would send back is read back the same."""
    headers = end_to_end(head.headers)
    with calling("response_head"):
        data = response_head(head.status, headers, head.reason or "x")
    events = ResponseParser(head_request).feed(data)
    again = events[0] if events else None
    check(isinstance(again, ResponseHead), "http1.reread-response", f"{data!r} read as {events}")
    assert isinstance(again, ResponseHead)
    same = (again.status, again.headers) == (head.status, headers)
    check(same, "http1.reread-response", lambda: f"{data!r} read back as {again.headers}")


def parse(data: bytes, pieces: list[bytes], responses: bool, head_request: bool) -> Folded:
    """Parse ``data`` whole and in ``pieces``, check both; returns what the whole gave."""
    parser = ResponseParser(head_request) if responses else RequestParser()
    with calling(f"{type(parser).__name__}.feed"):
        whole = fold(parser.feed(data))
    if isinstance(parser, RequestParser) and (whole.error is not None or whole.upgraded):
        check(parser.failed, "http1.failed-parser", "not failed after an error or upgrade")
        check(parser.feed(b"GET / HTTP/1.1\r\n\r\n") == [], "http1.failed-parser", "fed again")
    if not responses and whole.error is not None:
        check(whole.error in REQUEST_STATUSES, "http1.request-error-status", str(whole.error))
    parser = ResponseParser(head_request) if responses else RequestParser()
    events: list[Event] = []
    after: list[bytes] = []  # what follows an upgrade, read by the tunnel, not the parser
    for piece in pieces:
        if events and isinstance(events[-1], Upgraded):
            after.append(piece)
        with calling(f"{type(parser).__name__}.feed"):
            events += parser.feed(piece)
    cut = fold(events)
    if cut.upgraded is not None:
        cut.upgraded += b"".join(after)
    same(whole, cut)
    for message in whole.messages:
        check_head(message.head)
        check_body(message, head_request)
        if isinstance(message.head, RequestHead):
            reread_request(message.head)
        else:
            reread_response(message.head, head_request)
    return whole


def one_input(data: bytes) -> None:
    """One fuzz input (see the module's docstring for its layout)."""
    draw = Draw(data)
    mode, seed, flags = draw.byte() % 4, draw.byte(), draw.byte()
    parts = []
    if mode in {0, 2}:
        stream = draw.rest()
    elif mode == 1:
        parts = http1_messages.requests(draw)
        stream = b"".join(parts)
    else:
        stream = http1_messages.responses(draw)
    whole = parse(stream, split(stream, seed), responses=mode >= 2, head_request=bool(flags & 1))
    if parts:
        check_alone(parts, whole)


PROBE = b"GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n"


def alone(part: bytes) -> Message | None:
    """``part`` parsed on its own, if it is exactly one complete request (a request after it
    is read as the next)."""
    folded = fold(RequestParser().feed(part + PROBE))
    if folded.error is not None or folded.upgraded is not None or len(folded.messages) != 2:
        return None
    first, probe = folded.messages
    if not (first.ended and probe.ended and _head_fields(probe.head)[1] == "/probe"):
        return None
    return first


def check_alone(parts: list[bytes], whole: Folded) -> None:
    """Requests that each read alone as one complete request read, pipelined, as the same
    requests: nothing of one carries over into the next (trailers, say, or a half-read body)."""
    single = [alone(part) for part in parts]
    if any(message is None for message in single):
        return
    heads = [_head_fields(m.head) for m in single if m is not None]
    piped = [_head_fields(m.head) for m in whole.messages]
    check(heads == piped, "http1.pipelined-heads", lambda: f"alone {heads}, pipelined {piped}")
    bodies = [m.body for m in single if m is not None]
    check(bodies == [m.body for m in whole.messages], "http1.pipelined-bodies")


if __name__ == "__main__":
    main("http1_codec", guarded(one_input), dict_name="http")
