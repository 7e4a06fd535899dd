"""HTTP/1.1 for the proxy, sans-IO. :class:`RequestReader` turns a client's bytes into calls on
a sink (head, body pieces, end) and refuses anything a smuggling attack could use (Content-Length
with Transfer-Encoding, two Content-Lengths, obs-fold, bare LF, oversized headers) with a 400
reason — llhttp (inside httptools) rejects most in its strict mode, and the framing is checked
again here; :class:`ResponseReader` does the same for an upstream's answers. The readers make no
object per event (they sit on the proxy's hot path); :class:`RequestParser` and
:class:`ResponseParser` give the same as a list of events. Serializers write heads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Protocol

import httptools

MAX_HEADER_BYTES: Final = 64 * 1024
MAX_HEADERS: Final = 100

HOP_BY_HOP: Final = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip


class RequestHead:
    """A parsed request line and headers (names lowercase), with what the proxy asks of every
    request noted while parsing: the first Host, the body's length (None: chunked or none),
    whether it is chunked, whether any hop-by-hop header is present, ``Expect: 100-continue``,
    and the X-Request-Id a proxy passes along."""

    # Plain classes, not dataclasses, for the heads: compiled, a dataclass's __init__ stays
    # interpreted, at several times the cost (one of each is made per request).
    __slots__ = (
        "chunked", "expect_continue", "headers", "hop_by_hop", "host", "keep_alive", "length",
        "method", "request_id", "target", "upgrade", "version",
    )  # fmt: skip

    def __init__(
        self,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        upgrade: bool = False,
        host: str | None = None,
        length: int | None = None,
        chunked: bool = False,
        hop_by_hop: bool = False,
        expect_continue: bool = False,
        request_id: str | None = None,
    ) -> None:
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.keep_alive, self.upgrade, self.host, self.length = keep_alive, upgrade, host, length
        self.chunked, self.hop_by_hop, self.expect_continue = chunked, hop_by_hop, expect_continue
        self.request_id = request_id


class ResponseHead:
    """A parsed status line and headers (names lowercase), with the body's length (None:
    chunked, or delimited by the close), whether it is framed at all, and whether any hop-by-hop
    header is present."""

    __slots__ = ("framed", "headers", "hop_by_hop", "keep_alive", "length", "reason", "status")

    def __init__(
        self,
        status: int,
        reason: str,
        headers: list[tuple[str, str]],
        keep_alive: bool,
        length: int | None = None,
        framed: bool = False,
        hop_by_hop: bool = False,
    ) -> None:
        self.status, self.reason, self.headers = status, reason, headers
        self.keep_alive, self.length, self.framed, self.hop_by_hop = (
            keep_alive, length, framed, hop_by_hop
        )  # fmt: skip


@dataclass(slots=True)
class Body:
    """A piece of a message body."""

    data: bytes


@dataclass(slots=True)
class Upgraded:
    """The request asked to switch protocols (Upgrade): from here on the connection carries
    raw bytes, starting with ``data``."""

    data: bytes


@dataclass(slots=True)
class EndOfMessage:
    """The message is complete."""


@dataclass(slots=True)
class ProtocolError:
    """The peer sent something the mesh will not pass on; ``status`` for a client, and why."""

    status: int
    reason: str


Event = RequestHead | ResponseHead | Body | EndOfMessage | ProtocolError | Upgraded
END: Final = EndOfMessage()


class RefusedError(Exception):
    """Raised by a sink (or the reader itself) to stop parsing: ``feed`` returns a
    ProtocolError with ``status`` and the reason."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


# Headers noted while a head is checked: framing, Host, Expect, and the hop-by-hop ones.
_NOTED: Final = HOP_BY_HOP | {"content-length", "host", "expect", "x-request-id"}


# length, chunked, hop-by-hop present, host, Expect: 100-continue, X-Request-Id
_Noted = tuple[int | None, bool, bool, str | None, bool, str | None]


def _note(headers: list[tuple[str, str]]) -> _Noted:
    """What a head says about its framing (refusing what a smuggler could use: Content-Length
    with Transfer-Encoding, two Content-Lengths, a bad length, an encoding other than chunked
    last), its Host, Expect, X-Request-Id, and whether it has hop-by-hop headers. One pass
    over the names."""
    lengths: list[str] = []
    encoding = host = request_id = None
    hop_by_hop = expect_continue = False
    hosts = 0
    for name, value in headers:
        if name not in _NOTED:
            continue
        if name == "content-length":
            lengths.append(value)
        elif name == "host":
            hosts += 1
            if host is None:
                host = value
        elif name == "expect":
            expect_continue = value.lower() == "100-continue"
        elif name == "x-request-id":
            request_id = value
        else:
            hop_by_hop = True
            if name == "transfer-encoding":
                encoding = value
    if host is not None and hosts > 1:
        raise RefusedError("more than one Host header")
    if lengths and encoding is not None:
        raise RefusedError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise RefusedError("more than one Content-Length")
    if lengths:
        length = lengths[0].strip()
        if not (length.isascii() and length.isdigit()):
            raise RefusedError(f"invalid Content-Length {lengths[0]!r}")
        return int(length), False, hop_by_hop, host, expect_continue, request_id
    if encoding is not None:
        if encoding.split(",")[-1].strip().lower() != "chunked":
            raise RefusedError(f"unsupported Transfer-Encoding {encoding!r}")
        return None, True, hop_by_hop, host, expect_continue, request_id
    return None, False, hop_by_hop, host, expect_continue, request_id


def _refusal(error: httptools.HttpParserError) -> ProtocolError | None:
    """The ProtocolError for a RefusedError raised in a callback (httptools raises its own
    callback error with ours as the context); any other exception in a callback is a bug and
    is raised again as itself."""
    if not isinstance(error, httptools.HttpParserCallbackError):
        return None
    cause = error.__context__
    if isinstance(cause, RefusedError):
        return ProtocolError(cause.status, str(cause))
    if cause is not None:
        raise cause
    return None


class RequestSink(Protocol):
    """Where a :class:`RequestReader` delivers a request: the head, pieces of body, the end."""

    def head_received(self, head: RequestHead) -> None: ...
    def body_received(self, data: bytes) -> None: ...
    def message_complete(self) -> None: ...


class ResponseSink(Protocol):
    """Where a :class:`ResponseReader` delivers a response: the head, pieces of body, the end."""

    def head_received(self, head: ResponseHead) -> None: ...
    def body_received(self, data: bytes) -> None: ...
    def message_complete(self) -> None: ...


class _Nowhere:
    """The sink of a detached reader, and its parser's protocol: takes nothing."""

    def head_received(self, head: RequestHead | ResponseHead) -> None:
        pass

    def body_received(self, data: bytes) -> None:
        pass

    def message_complete(self) -> None:
        pass


_NOWHERE: Final = _Nowhere()
# What detached readers hold instead of their own parsers; never fed (detached readers have
# failed).
_DETACHED_REQUESTS: Final = httptools.HttpRequestParser(_NOWHERE)
_DETACHED_RESPONSES: Final = httptools.HttpResponseParser(_NOWHERE)


# Header names as they come on the wire -> lowercase, for the first MAX_NAMES short names seen:
# the same few names come with every message, and a kept name is one string less per header,
# with its hash already known to the lookups that follow (``_note``, the engine's matches).
_NAMES: Final[dict[bytes, str]] = {}
MAX_NAMES: Final = 512


class _HeadCollector:
    """The httptools callbacks both readers share: target or reason, and headers within limits.
    Header fields after the head (a chunked body's trailers) count toward the same size limit
    and are dropped: they belong to their message and must never become headers of the next
    one. A request header whose name has an underscore is dropped too (as nginx does): servers
    that map ``-`` to ``_`` (CGI, WSGI) would read ``Content_Length`` or
    ``X_Tulle_Source_Workload`` as the header the mesh checks or removes."""

    drops_underscores = False

    # Each message starts from the state its predecessor's on_headers_complete leaves (no
    # on_message_begin callback: one call fewer per message).
    def __init__(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.trailing = False  # the head is complete: header fields now are trailers

    def on_url(self, url: bytes) -> None:
        if self.trailing:  # a new request begins
            self.trailing, self.header_bytes = False, 0
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            raise RefusedError("request target too long", 414)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADERS:
            raise RefusedError("request headers are too large", 431)
        if self.trailing:
            return  # a trailer: dropped (see the class)
        lowered = _NAMES.get(name)
        if lowered is None:
            if b"_" in name:  # never kept in _NAMES, so this check runs for every such name
                if self.drops_underscores:
                    return
                lowered = name.decode("latin-1").lower()
            else:
                lowered = name.decode("latin-1").lower()
                if len(_NAMES) < MAX_NAMES and len(name) <= 64:  # a bound on what a peer can pin
                    _NAMES[name] = lowered
        self.headers.append((lowered, value.decode("latin-1")))


class RequestReader(_HeadCollector):
    """Client bytes → calls on a :class:`RequestSink`, with no object per event. After a
    ProtocolError (returned by ``feed``) the connection must be closed."""

    drops_underscores = True

    def __init__(self, sink: RequestSink) -> None:
        super().__init__()
        self.sink = sink
        # httptools calls these directly: no frame of ours between it and the sink.
        self.on_body = sink.body_received
        self.on_message_complete = sink.message_complete
        self.parser = httptools.HttpRequestParser(self)
        self.failed = False

    def on_headers_complete(self) -> None:
        parser = self.parser
        length, chunked, hop_by_hop, host, expect_continue, request_id = _note(self.headers)
        keep_alive = parser.should_keep_alive()
        # Kept alive with no Connection header (nor any hop-by-hop one) is HTTP/1.1: llhttp
        # keeps 1.0 alive only when Connection says so, and refuses versions other than 0.9,
        # 1.0, 1.1 and 2.0. httptools formats the version string afresh on every call.
        version = "1.1" if keep_alive and not hop_by_hop else parser.get_http_version()
        head = RequestHead(
            parser.get_method().decode("latin-1"), self.url.decode("latin-1"), version,
            self.headers, keep_alive, parser.should_upgrade(), host, length, chunked, hop_by_hop,
            expect_continue, request_id,
        )  # fmt: skip
        self.url, self.headers, self.trailing = b"", [], True  # trailers, then the next message
        self.sink.head_received(head)

    def detach(self) -> None:
        """The connection is gone: parsing stops, and the reader lets go of its sink and its
        parser, which both refer back to it, so that no reference cycle is left for the
        collector."""
        self.failed = True
        self.sink = _NOWHERE
        self.on_body = _NOWHERE.body_received
        self.on_message_complete = _NOWHERE.message_complete
        self.parser = _DETACHED_REQUESTS

    def feed(self, data: bytes) -> ProtocolError | Upgraded | None:
        """Parse ``data``; a ProtocolError or the start of an upgraded stream ends parsing."""
        if self.failed:
            return None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.failed = True  # the rest is not HTTP
            offset = upgrade.args[0] if upgrade.args else len(data)
            return Upgraded(data[offset:])
        except httptools.HttpParserError as error:
            self.failed = True
            refused = _refusal(error)
            return refused or ProtocolError(400, f"malformed request: {error}")
        return None


class ResponseReader(_HeadCollector):
    """Upstream bytes → calls on a :class:`ResponseSink`. ``head_request``: the response answers
    a HEAD, so it has no body whatever its length says."""

    def __init__(self, sink: ResponseSink, head_request: bool = False) -> None:
        super().__init__()
        self.sink = sink
        self.head_request = head_request
        self.done = False  # the message ended with its head (HEAD, 204, 304, 1xx)
        self.parser = httptools.HttpResponseParser(self)
        self.failed = False

    def on_headers_complete(self) -> None:
        parser = self.parser
        length, chunked, hop_by_hop, _, _, _ = _note(self.headers)
        status = parser.get_status_code()
        if status < 100:  # llhttp takes any three digits
            raise RefusedError(f"status {status:03d} is not an HTTP status", 502)
        head = ResponseHead(
            status, _REASONS.get(status, ""), self.headers, parser.should_keep_alive(), length,
            length is not None or chunked, hop_by_hop,
        )  # fmt: skip
        self.url, self.headers, self.trailing = b"", [], True  # trailers, then the next message
        self.done = self.head_request or status < 200 or status in (204, 304)
        self.sink.head_received(head)
        if self.done:
            self.sink.message_complete()

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.sink.body_received(body)

    def on_message_complete(self) -> None:
        self.trailing, self.header_bytes = False, 0
        if not self.done:
            self.sink.message_complete()

    def detach(self) -> None:
        """The connection is gone: as :meth:`RequestReader.detach`."""
        self.failed = True
        self.sink = _NOWHERE
        self.parser = _DETACHED_RESPONSES

    def feed(self, data: bytes) -> ProtocolError | Upgraded | None:
        """Parse ``data``; a ProtocolError means the connection is unusable; Upgraded: the
        upstream switched protocols (101), and the rest of the connection is raw bytes."""
        if self.failed:
            return None
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.failed = True
            offset = upgrade.args[0] if upgrade.args else len(data)
            return Upgraded(data[offset:])
        except httptools.HttpParserError as error:
            self.failed = True
            refused = _refusal(error)
            reason = refused.reason if refused is not None else str(error)
            return ProtocolError(502, f"invalid upstream response: {reason}")
        return None


class _Events:
    """A sink that keeps events in a list (the parsers' event interface)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def head_received(self, head: RequestHead | ResponseHead) -> None:
        self.events.append(head)

    def body_received(self, data: bytes) -> None:
        self.events.append(Body(data))

    def message_complete(self) -> None:
        self.events.append(END)

    def take(self, tail: Event | None) -> list[Event]:
        events, self.events = self.events, []
        if tail is not None:
            events.append(tail)
        return events


class RequestParser:
    """Client bytes → request events (a :class:`RequestReader` keeping its calls as a list).
    After a ProtocolError the connection must be closed."""

    def __init__(self) -> None:
        self._events = _Events()
        self.reader = RequestReader(self._events)

    @property
    def failed(self) -> bool:
        """Whether parsing has stopped (an error or an upgrade)."""
        return self.reader.failed

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; at most one ProtocolError, last."""
        return self._events.take(self.reader.feed(data))


class ResponseParser:
    """Upstream bytes → response events. ``head_request`` tells it a HEAD's answer has no body."""

    def __init__(self, head_request: bool = False) -> None:
        self._events = _Events()
        self.reader = ResponseReader(self._events, head_request)

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``."""
        return self._events.take(self.reader.feed(data))


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """``METHOD target HTTP/1.1`` and the headers."""
    lines = [f"{k}: {v}\r\n" for k, v in headers]
    return f"{method} {target} HTTP/1.1\r\n{''.join(lines)}\r\n".encode("latin-1")


_REASONS: Final = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 414: "URI Too Long", 418: "I'm a teapot",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def response_head(
    status: int,
    headers: list[tuple[str, str]],
    reason: str = "",
    length: int | None = None,
    close: bool = False,
) -> bytes:
    """``HTTP/1.1 status reason`` and the headers; with ``length``, Content-Length says it
    (any in ``headers`` is dropped); with ``close``, ``Connection: close`` follows."""
    if length is None:
        lines = [f"{k}: {v}\r\n" for k, v in headers]
    else:
        lines = [f"{k}: {v}\r\n" for k, v in headers if k != "content-length"]
        lines.append(f"content-length: {length}\r\n")
    if close:
        lines.append("connection: close\r\n")
    reason = reason or _REASONS.get(status, "Unknown")
    return f"HTTP/1.1 {status} {reason}\r\n{''.join(lines)}\r\n".encode("latin-1")


# Connection values that name no other header to drop.
_PLAIN_CONNECTION: Final = frozenset({"keep-alive", "close", "Keep-Alive", "Close"})


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones (and those named in Connection)."""
    drop = HOP_BY_HOP
    for name, value in headers:
        if name == "connection" and value not in _PLAIN_CONNECTION:
            drop = drop | {token.strip().lower() for token in value.split(",")}
    return [(k, v) for k, v in headers if k not in drop]
