"""What a parsed request head becomes: the engine's :class:`~tulle.engine.message.Request`
(the target's form and Host checked, the path normalized, a request id given when the client
sent none), or the mesh's 400 saying why not. One function per protocol."""

from __future__ import annotations

import random
from typing import Final
from urllib.parse import urlsplit

from tulle.codec.http1 import RequestHead, end_to_end
from tulle.codec.paths import PathError, PathNormalization, normalize_target
from tulle.engine import errors
from tulle.engine.message import ByteStream, Request, Response, mesh_response


class _RequestIds:
    """Request ids in UUID form: a random prefix per process, then a counter (from a random
    start) per request. Unique, and a third of the cost of 128 fresh random bits formatted
    per request; they are for tracing, not secrets."""

    def __init__(self, chance: random.Random) -> None:
        bits = chance.getrandbits
        variant = 8 | bits(2)  # version 4, variant 1: the layout of a random UUID
        self.prefix = f"{bits(32):08x}-{bits(16):04x}-4{bits(12):03x}-{variant:x}{bits(12):03x}-"
        self.count = bits(48)

    def next(self) -> str:
        """The next id."""
        self.count = (self.count + 1) & 0xFFFF_FFFF_FFFF
        # Compiled, this is about half the cost of "%012x" % count (format() is slower still).
        return self.prefix + self.count.to_bytes(6, "big").hex()


_ids: Final = _RequestIds(random.Random())  # seeded from the OS once


def request_id() -> str:
    """A new request id (see :class:`_RequestIds`)."""
    return _ids.next()


def _bad(reason: str) -> Response:
    return mesh_response(errors.MeshError(400, "DPE", f"bad request: {reason}"))


def _normalized(path: str, paths: PathNormalization) -> str | Response:
    if path == "*":
        return path
    try:
        return normalize_target(path, paths)
    except PathError as error:
        return _bad(str(error))


def http1_request(
    head: RequestHead, body: bytes | ByteStream, peer: str, paths: PathNormalization
) -> Request | Response:
    """An HTTP/1.1 request: origin-form (with its Host) or absolute-form (the forward
    proxy's, whose host must be the Host header's when both are given)."""
    target = head.target
    headers = end_to_end(head.headers) if head.hop_by_hop else head.headers
    if head.upgrade:  # the upstream must see the Upgrade it is asked for
        headers += [(k, v) for k, v in head.headers if k in ("connection", "upgrade")]
    if target[:1] == "/" or target == "*":
        if head.host is None:
            return _bad("no Host header")
        authority, path = head.host, target
    elif target.startswith(("http://", "https://")):
        try:
            parts = urlsplit(target)
        except ValueError as error:  # e.g. "Invalid IPv6 URL"
            return _bad(f"request target {target[:80]!r}: {error}")
        authority = parts.netloc
        if not authority or (head.host is not None and head.host != authority):
            return _bad(f"Host {head.host!r} differs from the target's {authority!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
    elif head.method == "CONNECT":
        return _bad(
            f"CONNECT {target[:80]} (a tunnel, as HTTPS_PROXY asks for) is not supported;"
            " send http:// URLs through this proxy"
        )
    else:
        return _bad(f"unsupported request target {target[:80]!r}")
    normalized = _normalized(path, paths)
    if isinstance(normalized, Response):
        return normalized
    if head.request_id is None:
        headers.append(("x-request-id", request_id()))
    return Request(head.method, normalized, authority, headers, body, peer)


def http2_request(
    headers: list[tuple[str, str]], body: bytes | ByteStream, peer: str, paths: PathNormalization
) -> Request | Response:
    """An HTTP/2 request from its header block (checked by
    :func:`tulle.codec.http2.request_headers`): its pseudo-headers, then the rest."""
    method = path = authority = None
    regular: list[tuple[str, str]] = []
    for name, value in headers:
        if name[:1] != ":":
            regular.append((name, value))
        elif name == ":method":
            method = value
        elif name == ":path":
            path = value
        elif name == ":authority":
            authority = value
    if authority is None:
        authority = next((v for k, v in regular if k == "host"), "")
    if method is None or path is None:
        return _bad("no :method or :path")
    if path[:1] != "/" and not (path == "*" and method == "OPTIONS"):
        return _bad(f":path {path[:80]!r} is not an absolute path")
    normalized = _normalized(path, paths)
    if isinstance(normalized, Response):
        return normalized
    return Request(method, normalized, authority, regular, body, peer, http2=True)
