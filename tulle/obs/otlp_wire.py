"""Protobuf's wire format as :mod:`tulle.obs.otlp` writes OTLP: varints, length-delimited
fields, and attributes (opentelemetry-proto's ``KeyValue``/``AnyValue``), the ones that repeat
from span to span taken from a bounded cache instead of written again."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, TypeVar

Value = str | int | float | bool | list[str]

SMALL: Final = [bytes([n]) for n in range(128)]
"""The one-byte varints."""
# A KeyValue's value field (2) of a short AnyValue, by its size; and of a short AnyValue's
# string_value (1), by the string's size: made once, not per attribute.
_ANY: Final = [bytes([0x12, n]) for n in range(128)]
_ANY_STRING: Final = [bytes([0x12, n + 2, 0x0A, n]) for n in range(126)]
DOUBLE: Final = struct.Struct("<d")
CACHE_MAX: Final = 4096
"""The most entries any of the encoder's caches keeps (it is emptied when full)."""


_TWO_BYTES: Final = struct.Struct("<BB")


def varint(number: int) -> bytes:
    """``number`` (unsigned, < 2**64) as a protobuf varint."""
    if number < 128:
        return SMALL[number]
    if number < 16384:  # a span's size: one pack, not a loop
        return _TWO_BYTES.pack((number & 0x7F) | 0x80, number >> 7)
    out = bytearray()
    while number >= 128:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


def field(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its ``key`` ((number << 3) | 2), length and ``payload``."""
    return key + varint(len(payload)) + payload


def varint_size(number: int) -> int:
    """How many bytes ``varint(number)`` takes."""
    size = 1
    while number >= 128:
        number >>= 7
        size += 1
    return size


_KEYS: Final[dict[str, bytes]] = {}  # an attribute key's KeyValue.key field, made once


def key_field(key: str) -> bytes:
    """``key`` as a ``KeyValue.key`` field."""
    encoded = _KEYS.get(key)
    if encoded is None:
        encoded = _KEYS[key] = field(b"\x0a", key.encode())
    return encoded


CACHE: Final[dict[tuple[bytes, str, str | int | bool], bytes]] = {}
"""Attributes written already, by field, key and value: most repeat from span to span (the
method, the host, the cluster, the endpoint, a status), and a hit is one lookup instead of an
encoding. Emptied when it reaches :data:`CACHE_MAX` (values such as paths are many)."""


def any_bytes(key_value: bytes, key: str, value: bytes) -> bytes:
    """A ``KeyValue`` whose ``AnyValue`` is ``value``, as the repeated field ``key_value``."""
    name = key_field(key)
    size = len(value)
    if len(name) + size < 126:  # the usual: every length is one byte
        return key_value + SMALL[len(name) + 2 + size] + name + _ANY[size] + value
    return (
        key_value + varint(len(name) + 1 + varint_size(size) + size) + name + b"\x12"
        + varint(size) + value
    )  # fmt: skip


def string_bytes(key_value: bytes, key: str, value: str) -> bytes:
    """A string ``KeyValue`` as the repeated field ``key_value``."""
    data = value.encode()
    size = len(data)
    name = key_field(key)
    if len(name) + size < 124:  # the usual: every length is one byte
        return key_value + SMALL[len(name) + 4 + size] + name + _ANY_STRING[size] + data
    any_size = 1 + varint_size(size) + size
    return (
        key_value + varint(len(name) + 1 + varint_size(any_size) + any_size) + name + b"\x12"
        + varint(any_size) + b"\x0a" + varint(size) + data
    )  # fmt: skip


Entry = TypeVar("Entry")
Encoded = TypeVar("Encoded")


def remember(cache: dict[Entry, Encoded], entry: Entry, encoded: Encoded) -> None:
    """``encoded`` kept in ``cache`` for ``entry``; the cache emptied first when it is full."""
    if len(cache) >= CACHE_MAX:
        cache.clear()
    cache[entry] = encoded


Inner = TypeVar("Inner")


def nested(cache: dict[Entry, dict[Inner, Encoded]], entry: Entry) -> dict[Inner, Encoded]:
    """The cache kept in ``cache`` for ``entry`` (a new, empty one the first time): a two-level
    lookup by two values, with no tuple made of them."""
    inner = cache.get(entry)
    if inner is None:
        inner = {}
        remember(cache, entry, inner)
    return inner


class Attributes:
    """The attributes of one message as they are written (``KeyValue``s in its repeated field
    ``field``), appended to ``parts``: one call per attribute, typed; a string, integer or
    boolean attribute seen before is taken from the cache (``cache=False`` for values that
    never repeat)."""

    __slots__ = ("field", "parts")

    def __init__(self, field: bytes, parts: list[bytes] | None = None) -> None:
        self.field = field
        self.parts: list[bytes] = [] if parts is None else parts  # where they are written

    def string(self, key: str, value: str, cache: bool = True) -> None:
        """A string attribute."""
        if not cache:
            self.parts.append(string_bytes(self.field, key, value))
            return
        entry: tuple[bytes, str, str | int | bool] = (self.field, key, value)
        encoded = CACHE.get(entry)
        if encoded is None:
            encoded = string_bytes(self.field, key, value)
            remember(CACHE, entry, encoded)
        self.parts.append(encoded)

    def integer(self, key: str, value: int) -> None:
        """An int64 attribute."""
        entry: tuple[bytes, str, str | int | bool] = (self.field, key, value)
        encoded = CACHE.get(entry)
        if encoded is None:
            encoded = any_bytes(self.field, key, b"\x18" + varint(value & 0xFFFF_FFFF_FFFF_FFFF))
            remember(CACHE, entry, encoded)
        self.parts.append(encoded)

    def boolean(self, key: str, value: bool) -> None:
        """A boolean attribute."""
        self.parts.append(any_bytes(self.field, key, b"\x10\x01" if value else b"\x10\x00"))

    def double(self, key: str, value: float) -> None:
        """A double attribute."""
        self.parts.append(any_bytes(self.field, key, b"\x21" + DOUBLE.pack(value)))

    def strings(self, key: str, values: list[str]) -> None:
        """An array of strings."""
        items = b"".join([field(b"\x0a", field(b"\x0a", v.encode())) for v in values])
        self.parts.append(any_bytes(self.field, key, field(b"\x2a", items)))

    def value(self, key: str, item: Value) -> None:
        """An attribute of any of the types above."""
        if isinstance(item, bool):
            self.boolean(key, item)
        elif isinstance(item, int):
            self.integer(key, item)
        elif isinstance(item, float):
            self.double(key, item)
        elif isinstance(item, list):
            self.strings(key, item)
        else:
            self.string(key, item)

    def encoded(self) -> bytes:
        """The attributes' bytes."""
        return b"".join(self.parts)


def key_values(key_value: bytes, pairs: Iterable[tuple[str, Value]]) -> bytes:
    """Attributes from pairs, as the repeated field ``key_value``."""
    out = Attributes(key_value)
    for key, item in pairs:
        out.value(key, item)
    return out.encoded()


class StringHeads:
    """A string attribute ``key`` (as the repeated field ``key_value``; with ``array``, an array
    of one string) written but its string: what comes before the string's bytes, kept by the
    string's size, so that a value that never repeats (a URL, a request id) is written as two
    pieces, its head and its bytes, with no copy."""

    __slots__ = ("array", "heads", "key", "key_value")

    def __init__(self, key_value: bytes, key: str, array: bool = False) -> None:
        self.key_value, self.key, self.array = key_value, key, array
        self.heads: dict[int, bytes] = {}

    def head(self, size: int) -> bytes:
        """The bytes before a string of ``size`` bytes."""
        head = self.heads.get(size)
        if head is None:
            whole = Attributes(self.key_value)
            if self.array:
                whole.strings(self.key, ["\0" * size])
            else:
                whole.string(self.key, "\0" * size, cache=False)
            head = whole.parts[0][: len(whole.parts[0]) - size]
            remember(self.heads, size, head)
        return head
