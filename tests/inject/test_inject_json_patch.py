"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: its JSON Patch turns one
document into the other (a Hypothesis property on arbitrary JSON) with the expected operations."""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st

from tulle.inject import json_patch

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a", "a/b", "~0", "~1/"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "a/b", "~", "c~1"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_json_patch_turns_one_document_into_the_other(before: Any, after: Any) -> None:
    patch = json_patch(before, after)
    assert jsonpatch.apply_patch(copy.deepcopy(before), patch) == after
    assert json.loads(json.dumps(patch)) == patch  # plain JSON, as the webhook sends it


def test_json_patch_operations() -> None:
    before = {"a/b": [1, 2, 3], "t~": True, "gone": 1, "list": [{"x": 1}, {"y": 2}]}
    after = {"a/b": [0, 1, 2, 3], "t~": 1, "new": {"k": "v"}, "list": [{"y": 2}]}
    assert json_patch(before, after) == [
        {"op": "remove", "path": "/gone"},
        {"op": "add", "path": "/a~1b/0", "value": 0},
        {"op": "replace", "path": "/t~0", "value": 1},  # True is not 1 in JSON
        {"op": "add", "path": "/new", "value": {"k": "v"}},
        {"op": "remove", "path": "/list/0"},
    ]
    assert json_patch([1, 2], [3]) == [{"op": "replace", "path": "", "value": [3]}]
