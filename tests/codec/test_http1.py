"""The HTTP/1.1 codec without sockets: any split of valid bytes gives the same messages; anything
a request smuggler could use is a ProtocolError with a reason."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.codec.http1 import (
    Body,
    EndOfMessage,
    ProtocolError,
    RefusedError,
    RequestHead,
    RequestParser,
    RequestReader,
    ResponseHead,
    ResponseParser,
    end_to_end,
    request_head,
    response_head,
)

tokens = st.from_regex(r"\A[a-z][a-z0-9-]{0,15}\Z")
values = st.from_regex(r"\A[!-~]([ !-~]{0,30}[!-~])?\Z")
paths = st.from_regex(r"\A/[a-zA-Z0-9/._~-]{0,40}(\?[a-z0-9=&]{0,20})?\Z")


def feed_in_pieces(parser, data: bytes, cuts: list[int]):
    events = []
    last = 0
    for cut in sorted({c % (len(data) + 1) for c in cuts}):
        events += parser.feed(data[last:cut])
        last = cut
    events += parser.feed(data[last:])
    return events


def body_of(events) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, Body))


@given(
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    path=paths,
    headers=st.lists(
        st.tuples(
            tokens.filter(lambda t: t not in ("content-length", "transfer-encoding", "host")),
            values,
        ),
        max_size=6,
    ),
    body=st.binary(max_size=300),
    chunked=st.booleans(),
    cuts=st.lists(st.integers(0, 2000), max_size=6),
)
def test_any_split_of_a_valid_request_parses_to_the_same_request(
    method, path, headers, body, chunked, cuts
):
    framing = (
        [("transfer-encoding", "chunked")] if chunked else [("content-length", str(len(body)))]
    )
    all_headers = [("host", "web:8080"), *headers, *framing]
    payload = body
    if chunked:
        payload = (f"{len(body):x}\r\n".encode() + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    data = request_head(method, path, all_headers) + payload
    events = feed_in_pieces(RequestParser(), data + data, cuts)  # two pipelined
    heads = [e for e in events if isinstance(e, RequestHead)]
    assert len(heads) == 2
    assert [e for e in events if isinstance(e, ProtocolError)] == []
    assert (heads[0].method, heads[0].target) == (method, path)
    assert heads[0].headers == all_headers
    assert sum(isinstance(e, EndOfMessage) for e in events) == 2
    assert body_of(events) == body + body


SMUGGLING = {
    "content-length and transfer-encoding": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "two content-lengths": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 5\r\n\r\nabcde",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n 2\r\n\r\n",
    "bare LF": b"GET / HTTP/1.1\nHost: a\n\n",
    "bare LF in a header": b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n",
    "space before colon": b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
    "unknown transfer-encoding": b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc",
    "oversized headers": b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 70000 + b"\r\n\r\n",
    "bad content-length": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\na",
}


@pytest.mark.parametrize("name", list(SMUGGLING))
def test_smuggling_shapes_are_protocol_errors(name):
    events = RequestParser().feed(SMUGGLING[name])
    errors = [e for e in events if isinstance(e, ProtocolError)]
    assert len(errors) == 1
    assert errors[0].status == (431 if name == "oversized headers" else 400)
    assert "callback" not in errors[0].reason  # the reason is ours, not httptools' wrapper
    assert not any(isinstance(e, EndOfMessage) for e in events)  # nothing complete to forward


def test_a_sink_refuses_with_its_own_status_and_reason():
    class SmallBodies:
        def head_received(self, head):
            pass

        def body_received(self, data):
            raise RefusedError("request body over 3 bytes", 413)

        def message_complete(self):
            raise AssertionError("a refused request never completes")

    reader = RequestReader(SmallBodies())
    refused = reader.feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nabcde")
    assert refused == ProtocolError(413, "request body over 3 bytes")
    assert reader.failed


def test_a_bug_in_a_sink_is_raised_not_turned_into_a_400():
    class Broken:
        def head_received(self, head):
            raise KeyError("bug")

        def body_received(self, data):
            pass

        def message_complete(self):
            pass

    with pytest.raises(KeyError):
        RequestReader(Broken()).feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def test_after_an_error_the_parser_stays_failed():
    parser = RequestParser()
    assert isinstance(parser.feed(b"GARBAGE\r\n\r\n")[-1], ProtocolError)
    assert parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n") == []


@given(body=st.binary(max_size=500), cuts=st.lists(st.integers(0, 1000), max_size=5))
def test_responses_in_pieces(body, cuts):
    data = response_head(200, [("content-length", str(len(body)))]) + body
    events = feed_in_pieces(ResponseParser(), data, cuts)
    assert [type(e) for e in events if not isinstance(e, Body)] == [ResponseHead, EndOfMessage]
    assert body_of(events) == body


def test_interim_response_then_the_final_one():
    data = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok"
    events = ResponseParser().feed(data)
    heads = [e.status for e in events if isinstance(e, ResponseHead)]
    assert heads == [100, 201]
    assert body_of(events) == b"ok"


def test_head_response_has_no_body_whatever_its_length_says():
    events = ResponseParser(head_request=True).feed(
        b"HTTP/1.1 200 OK\r\ncontent-length: 1024\r\n\r\n"
    )
    assert [type(e) for e in events] == [ResponseHead, EndOfMessage]


def test_hop_by_hop_headers_are_dropped():
    headers = [("connection", "keep-alive, x-secret"), ("keep-alive", "5"), ("x-secret", "1"),
               ("te", "trailers"), ("x-kept", "yes")]  # fmt: skip
    assert end_to_end(headers) == [("x-kept", "yes")]


@pytest.mark.parametrize(
    ("version", "connection", "keep_alive"),
    [
        ("1.1", "", True),
        ("1.1", "Connection: close\r\n", False),
        ("1.1", "Connection: keep-alive\r\n", True),
        ("1.1", "TE: trailers\r\n", True),
        ("1.0", "", False),
        ("1.0", "Connection: keep-alive\r\n", True),
        ("1.0", "Keep-Alive: timeout=5\r\n", False),
    ],
)
def test_the_version_and_keep_alive_of_a_request(version, connection, keep_alive):
    parser = RequestParser()
    for _ in range(2):  # a second message on the connection says the same
        data = f"GET / HTTP/{version}\r\nHost: a\r\n{connection}\r\n".encode()
        (head, end) = parser.feed(data)
        assert isinstance(head, RequestHead)
        assert isinstance(end, EndOfMessage)
        assert (head.version, head.keep_alive) == (version, keep_alive)
        if not keep_alive:
            break


def _headers_of(parser: RequestParser, data: bytes) -> list[tuple[str, str]]:
    (head, _) = parser.feed(data)
    assert isinstance(head, RequestHead)
    return head.headers


def test_header_names_are_lowercase_however_they_are_spelt():
    parser = RequestParser()
    spellings = ["X-Trace-Id", "x-trace-id", "X-TRACE-ID", "x-Trace-ID"]
    for spelling in spellings * 2:
        data = f"GET / HTTP/1.1\r\nHost: a\r\n{spelling}: 7\r\n\r\n".encode()
        assert _headers_of(parser, data) == [("host", "a"), ("x-trace-id", "7")]
    long_name = "X-" + "Long" * 40
    data = f"GET / HTTP/1.1\r\n{long_name}: 1\r\n\r\n".encode()
    assert _headers_of(parser, data) == [(long_name.lower(), "1")]
