"""The RFC 6902 JSON Patch that turns one JSON document into another: what the admission webhook
answers, so that the API server's result equals ``tulle inject``'s output."""

from __future__ import annotations

from typing import Any

Operation = dict[str, Any]


def json_patch(before: Any, after: Any) -> list[Operation]:
    """Operations (add, remove, replace) that make ``before`` equal ``after``. Mappings are
    compared key by key; a list that only gained (or only lost) a run of items gets ``add``
    (``remove``) operations for them, any other changed list of another length is replaced."""
    operations: list[Operation] = []
    _diff(before, after, "", operations)
    return operations


def _escape(key: str | int) -> str:
    return str(key).replace("~", "~0").replace("/", "~1")


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON (Python's ``True == 1`` is not)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[key], b[key]) for key in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _diff(a: Any, b: Any, path: str, operations: list[Operation]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a:
            if key not in b:
                operations.append({"op": "remove", "path": f"{path}/{_escape(key)}"})
        for key, value in b.items():
            where = f"{path}/{_escape(key)}"
            if key not in a:
                operations.append({"op": "add", "path": where, "value": value})
            else:
                _diff(a[key], value, where, operations)
    elif isinstance(a, list) and isinstance(b, list):
        _diff_lists(a, b, path, operations)
    elif not _same(a, b):
        operations.append({"op": "replace", "path": path, "value": b})


def _diff_lists(a: list[Any], b: list[Any], path: str, operations: list[Operation]) -> None:
    if len(a) == len(b):
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}/{index}", operations)
        return
    shorter = min(len(a), len(b))
    head = 0
    while head < shorter and _same(a[head], b[head]):
        head += 1
    tail = 0
    while tail < shorter - head and _same(a[-1 - tail], b[-1 - tail]):
        tail += 1
    if head + tail == len(a):  # b = a with items inserted at ``head``
        operations.extend(
            {"op": "add", "path": f"{path}/{index}", "value": b[index]}
            for index in range(head, len(b) - tail)
        )
    elif head + tail == len(b):  # b = a with items removed at ``head``
        operations.extend(
            {"op": "remove", "path": f"{path}/{head}"} for _ in range(len(a) - tail - head)
        )
    else:
        operations.append({"op": "replace", "path": path, "value": b})
