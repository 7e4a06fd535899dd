"""Request bodies: the nesting of JSON is measured without parsing it, brackets in strings do
not count, and every refusal carries its status and reason."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tulle.control.bodies import MAX_JSON_DEPTH, BodyError, json_body, nests_deeper_than

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet='[]{}"\\ ab'),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@given(json_values, st.integers(0, 6))
def test_nesting_is_measured_as_the_parser_would_see_it(value, limit):
    body = json.dumps(value).encode()
    assert nests_deeper_than(body, limit) == (depth(value) > limit)


def test_brackets_in_strings_do_not_count():
    body = json.dumps({"a": "[[[[{{{{" * 10, "b": ['\\"[[[']}).encode()
    assert not nests_deeper_than(body, 2)
    assert nests_deeper_than(body, 1)


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[" * (MAX_JSON_DEPTH + 1), 400, f"nests deeper than {MAX_JSON_DEPTH} levels"),
        (b" " * (64 * 1024 + 1), 413, "the limit is 65536"),
        (b"\xff", 400, "not UTF-8 text: invalid start byte at byte 0"),
        (b'{"a": 1, "a": 2}', 400, "key 'a' appears twice in one object"),
        (b"[1e999999, " + b"1" * 5000 + b"]", 400, "a number with too many digits"),
        (b"{", 400, "is not JSON"),
    ],
)
def test_refusals_carry_their_status_and_reason(body, status, message):
    with pytest.raises(BodyError, match=message) as refused:
        json_body(body)
    assert refused.value.status == status


def test_nesting_up_to_the_bound_parses():
    body = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
    assert depth(json_body(body)) == MAX_JSON_DEPTH
