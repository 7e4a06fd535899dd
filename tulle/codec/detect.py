"""Protocol detection from a connection's first bytes: HTTP/2 with prior knowledge starts with
the client preface; anything else on an HTTP port is treated as HTTP/1.1."""

from __future__ import annotations

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def detect(first: bytes) -> str | None:
    """``"h2"``, ``"http/1.1"``, or None when more bytes are needed to tell."""
    if first.startswith(H2_PREFACE):
        return "h2"
    if H2_PREFACE.startswith(first):
        return None
    return "http/1.1"
