"""Request bodies of the control plane's API: how large each may be, text that must be UTF-8,
and JSON whose nesting is bounded before it is parsed.

Every refusal is a :class:`BodyError` carrying the HTTP status (413 for size, 400 otherwise) and a
message that says what is wrong."""

from __future__ import annotations

import json
from typing import Any

MAX_APPLY_BYTES = 1024 * 1024
"""Largest YAML accepted by ``POST /api/v1/resources`` (Kubernetes stores objects up to 1.5 MiB)."""

MAX_JSON_BYTES = 64 * 1024
"""Largest JSON accepted by the registry's routes (a registration is a few hundred bytes)."""

MAX_JSON_DEPTH = 16
"""Deepest nesting of JSON objects and arrays (a registration has two levels)."""

_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


class BodyError(Exception):
    """A body the API refuses: ``status`` is 413 (too large) or 400."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_size(body: bytes, limit: int, what: str) -> None:
    """Refuse (413) a body larger than ``limit`` bytes."""
    if len(body) > limit:
        raise BodyError(413, f"{what} is {len(body)} bytes; the limit is {limit}")


def utf8_text(body: bytes, what: str) -> str:
    """``body`` decoded as UTF-8; refuses (400) anything else, naming the first bad byte."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise BodyError(
            400, f"{what} is not UTF-8 text: {error.reason} at byte {error.start}"
        ) from None


def nests_deeper_than(body: bytes, limit: int) -> bool:
    """Whether JSON arrays and objects in ``body`` nest more than ``limit`` levels (brackets
    inside strings do not count). Linear, with no recursion, and stops at the first level past
    ``limit``; meant to run before a parser that recurses once per level."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False  # too few brackets to go past the bound, whatever their order
    depth = 0
    in_string = escaped = False
    for byte in body:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


class _RepeatedKeyError(ValueError):
    pass


def _no_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise _RepeatedKeyError(f"key {key[:60]!r} appears twice in one object")
        data[key] = value
    return data


def json_body(body: bytes, what: str = "request body") -> Any:
    """``body`` parsed as JSON: at most :data:`MAX_JSON_BYTES`, UTF-8, nested at most
    :data:`MAX_JSON_DEPTH` levels, no key twice in one object."""
    check_size(body, MAX_JSON_BYTES, what)
    text = utf8_text(body, what)
    if nests_deeper_than(body, MAX_JSON_DEPTH):
        raise BodyError(400, f"{what} nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text or "null", object_pairs_hook=_no_repeated_keys)
    except json.JSONDecodeError as error:
        raise BodyError(400, f"{what} is not JSON: {error}") from None
    except _RepeatedKeyError as error:
        raise BodyError(400, f"{what}: {error}") from None
    except ValueError:  # Python refuses to convert integers of more than 4,300 digits
        raise BodyError(400, f"{what} holds a number with too many digits") from None
