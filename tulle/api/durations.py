"""Durations as Istio and the Gateway API write them: ``1.5s``, ``100ms``, ``1m``, ``1h30m``."""

from __future__ import annotations

import re

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
MAX_SECONDS = 315_576_000_000  # about 10,000 years: the most a protobuf Duration holds


def parse_duration(text: str) -> float:
    """Seconds in ``text``, a sequence of number-and-unit parts (Go's duration syntax).

    Raises ValueError with a message a user can act on."""
    if not isinstance(text, str):
        raise ValueError(f"duration must be a string such as '1.5s' or '100ms', got {text!r}")
    position = 0
    total = 0.0
    for part in _PART.finditer(text):
        if part.start() != position:
            break
        total += float(part.group(1)) * _UNITS[part.group(2)]
        position = part.end()
    if not text or position != len(text):
        raise ValueError(
            f"invalid duration {text!r}: write a number and a unit (h, m, s, ms, us, ns), "
            "e.g. '1.5s', '100ms', '1m'"
        )
    if total > MAX_SECONDS:
        raise ValueError(f"duration {text!r} is longer than 10,000 years (the most xDS holds)")
    return total


def format_duration(seconds: float) -> str:
    """The shortest exact form: 1.5 → ``1.5s``, 0.1 → ``100ms``."""
    if seconds and seconds < 1:
        return f"{_plain(seconds * 1000)}ms"
    return f"{_plain(seconds)}s"


def _plain(number: float) -> str:
    """``number`` in fixed notation to the nanosecond, without trailing zeros."""
    return f"{number:.9f}".rstrip("0").rstrip(".")
