"""HTTP/1.1 for the proxy, sans-IO. :class:`RequestParser` turns a client's bytes into request
events and refuses anything a smuggling attack could use (Content-Length with Transfer-Encoding,
two Content-Lengths, obs-fold, bare LF, oversized headers) with a 400 reason — llhttp (inside
httptools) rejects most in its strict mode, and the framing is checked again here;
:class:`ResponseParser` does the same for an upstream's answers. Serializers write heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import httptools

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-connection", "proxy-authenticate",
        "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
    }
)  # fmt: skip


@dataclass
class RequestHead:
    """A parsed request line and headers (names lowercase)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    keep_alive: bool
    upgrade: bool = False


@dataclass
class ResponseHead:
    """A parsed status line and headers (names lowercase)."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    keep_alive: bool


@dataclass
class Body:
    """A piece of a message body."""

    data: bytes


@dataclass
class Upgraded:
    """The request asked to switch protocols (Upgrade): from here on the connection carries
    raw bytes, starting with ``data``."""

    data: bytes


@dataclass
class EndOfMessage:
    """The message is complete."""


@dataclass
class ProtocolError:
    """The peer sent something the mesh will not pass on; ``status`` for a client, and why."""

    status: int
    reason: str


Event = RequestHead | ResponseHead | Body | EndOfMessage | ProtocolError | Upgraded


class _StopError(Exception):
    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.status = status


def _check_framing(headers: list[tuple[str, str]]) -> None:
    lengths = [v for k, v in headers if k == "content-length"]
    encodings = [v for k, v in headers if k == "transfer-encoding"]
    if lengths and encodings:
        raise _StopError("both Content-Length and Transfer-Encoding")
    if len(lengths) > 1:
        raise _StopError("more than one Content-Length")
    if lengths and not lengths[0].strip().isdigit():
        raise _StopError(f"invalid Content-Length {lengths[0]!r}")
    if encodings and encodings[-1].split(",")[-1].strip().lower() != "chunked":
        raise _StopError(f"unsupported Transfer-Encoding {encodings[-1]!r}")


@dataclass
class _Collector:
    """httptools callbacks gathering one message at a time."""

    events: list[Event] = field(default_factory=list)
    url: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    header_bytes: int = 0
    reason: bytes = b""

    def on_message_begin(self) -> None:
        self.url, self.headers, self.header_bytes, self.reason = b"", [], 0, b""

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > MAX_HEADER_BYTES:
            raise _StopError("request target too long", 414)

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > MAX_HEADER_BYTES or len(self.headers) >= MAX_HEADERS:
            raise _StopError("request headers are too large", 431)
        self.headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.events.append(Body(body))

    def on_message_complete(self) -> None:
        self.events.append(EndOfMessage())


class RequestParser:
    """Client bytes → request events. After a ProtocolError the connection must be closed."""

    def __init__(self) -> None:
        self._collector = _RequestCollector(self)
        self._parser = httptools.HttpRequestParser(self._collector)
        self.failed = False

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``; at most one ProtocolError, last."""
        if self.failed:
            return []
        collector = self._collector
        try:
            self._parser.feed_data(data)
        except _StopError as stop:
            self.failed = True
            return [*collector.take(), ProtocolError(stop.status, str(stop))]
        except httptools.HttpParserUpgrade as upgrade:
            self.failed = True  # the rest is not HTTP
            offset = upgrade.args[0] if upgrade.args else len(data)
            return [*collector.take(), Upgraded(data[offset:])]
        except httptools.HttpParserError as error:
            self.failed = True
            return [*collector.take(), ProtocolError(400, f"malformed request: {error}")]
        return collector.take()

    @property
    def parser(self) -> httptools.HttpRequestParser:
        """The underlying httptools parser."""
        return self._parser


class _RequestCollector(_Collector):
    def __init__(self, owner: RequestParser) -> None:
        super().__init__()
        self.owner = owner

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def on_headers_complete(self) -> None:
        parser = self.owner.parser
        _check_framing(self.headers)
        self.events.append(
            RequestHead(
                method=parser.get_method().decode("latin-1"),
                target=self.url.decode("latin-1"),
                version=parser.get_http_version(),
                headers=self.headers,
                keep_alive=parser.should_keep_alive(),
                upgrade=parser.should_upgrade(),
            )
        )


class ResponseParser:
    """Upstream bytes → response events. ``head_request`` tells it a HEAD's answer has no body."""

    def __init__(self, head_request: bool = False) -> None:
        self.head_request = head_request
        self._collector = _ResponseCollector(self, head_request)
        self._parser = httptools.HttpResponseParser(self._collector)
        self.failed = False

    @property
    def parser(self) -> httptools.HttpResponseParser:
        """The underlying httptools parser."""
        return self._parser

    def feed(self, data: bytes) -> list[Event]:
        """Events for ``data``."""
        if self.failed:
            return []
        try:
            self._parser.feed_data(data)
        except _StopError as stop:
            self.failed = True
            return [
                *self._collector.take(),
                ProtocolError(502, f"invalid upstream response: {stop}"),
            ]
        except httptools.HttpParserError as error:
            self.failed = True
            return [
                *self._collector.take(),
                ProtocolError(502, f"invalid upstream response: {error}"),
            ]
        return self._collector.take()

    def feed_eof(self) -> list[Event]:
        """The upstream closed: a body delimited by the close ends here."""
        return self._collector.take()


class _ResponseCollector(_Collector):
    def __init__(self, owner: ResponseParser, head_request: bool) -> None:
        super().__init__()
        self.owner = owner
        self.head_request = head_request
        self.done = False

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.done = False

    def on_headers_complete(self) -> None:
        parser = self.owner.parser
        _check_framing(self.headers)
        self.events.append(
            ResponseHead(
                status=parser.get_status_code(),
                reason=self.reason.decode("latin-1"),
                headers=self.headers,
                keep_alive=parser.should_keep_alive(),
            )
        )
        if (
            self.head_request
            or parser.get_status_code() in (204, 304)
            or 100 <= parser.get_status_code() < 200
        ):
            self.events.append(EndOfMessage())
            self.done = True

    def on_body(self, body: bytes) -> None:
        if not self.done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if not self.done:
            super().on_message_complete()


def request_head(method: str, target: str, headers: list[tuple[str, str]]) -> bytes:
    """``METHOD target HTTP/1.1`` and the headers."""
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


_REASONS = {
    200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
    303: "See Other", 304: "Not Modified", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 413: "Payload Too Large", 414: "URI Too Long", 418: "I'm a teapot",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout",
}  # fmt: skip


def response_head(status: int, headers: list[tuple[str, str]], reason: str = "") -> bytes:
    """``HTTP/1.1 status reason`` and the headers."""
    lines = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Unknown')}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def end_to_end(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """``headers`` without hop-by-hop ones (and those named in Connection)."""
    named = {
        token.strip().lower() for k, v in headers if k == "connection" for token in v.split(",")
    }
    return [(k, v) for k, v in headers if k not in HOP_BY_HOP and k not in named]
