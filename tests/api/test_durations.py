"""Durations as Istio writes them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.api.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1.5s", 1.5),
        ("100ms", 0.1),
        ("1m", 60.0),
        ("1h30m", 5400.0),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("0s", 0.0),
        (".5s", 0.5),
    ],
)
def test_parses_go_style_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "10 seconds", "s", "1.5", "-1s", "1d", "1s ", "1S"])
def test_rejects_what_is_not_a_duration(text):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_rejects_a_number():
    with pytest.raises(ValueError, match="must be a string"):
        parse_duration(5)  # type: ignore[arg-type]


@given(st.integers(0, 10**7))
def test_format_and_parse_agree(millis):
    seconds = millis / 1000
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)
