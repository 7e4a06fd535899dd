"""YAML past the loader's bounds (alias bombs, deep nesting, recursive aliases, values Python
cannot build) becomes one finding with file and line, quickly, never an exception or a hang."""

from __future__ import annotations

import pytest

from tulle.api import validate_paths, validate_text
from tulle.api.bounded_yaml import MAX_ALIAS_NODES, MAX_DEPTH
from tulle.api.kinds.networking import DestinationRule


def alias_bomb(levels: int = 9) -> str:
    """'Billion laughs': each level is a list of nine aliases of the level above."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        above = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([above] * 9)}]")
    return "\n".join(lines) + "\n"


def only_error(text: str, file: str = "t.yaml") -> str:
    result = validate_text(text, file)
    assert not result.ok
    (finding,) = result.findings
    return finding.format()


# The bounds: on the loader that expanded everything, the nine-level bomb ran for minutes.
@pytest.mark.timeout(60)
def test_an_alias_bomb_is_one_finding_at_the_alias_past_the_bound():
    bomb = alias_bomb()
    assert len(bomb) < 600
    # a0 has 10 nodes, a1 91, a2 820, a3 7,381: the aliases of a4 (line 5) pass 10,000
    assert only_error(bomb) == (
        f"t.yaml:5: ERROR - -/-: -: YAML refused: aliases expand to more than {MAX_ALIAS_NODES} "
        "nodes (an alias bomb?); write the repeated parts out, or repeat them less"
    )


@pytest.mark.timeout(60)
def test_a_file_with_an_alias_bomb_gets_a_finding_with_file_and_line(tmp_path):
    path = tmp_path / "bomb.yaml"
    path.write_text("# harmless looking\n" + alias_bomb())
    result = validate_paths([path])
    assert [f.format() for f in result.findings] == [
        f"{path}:6: ERROR - -/-: -: YAML refused: aliases expand to more than {MAX_ALIAS_NODES} "
        "nodes (an alias bomb?); write the repeated parts out, or repeat them less"
    ]


def test_aliases_for_shared_blocks_still_load():
    text = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy: &policy
    connectionPool: {http: {http1MaxPendingRequests: 10}}
  subsets:
    - {name: v1, labels: {version: v1}, trafficPolicy: *policy}
    - {name: v2, labels: {version: v2}, trafficPolicy: *policy}
"""
    result = validate_text(text)
    assert [f for f in result.findings if f.severity.value == "ERROR"] == []
    (resource,) = result.resources
    assert isinstance(resource, DestinationRule)
    assert resource.spec.subsets[1].traffic_policy == resource.spec.traffic_policy


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[" * 100_000, 1),  # flow style, never closed
        ("a: " + "[" * 5_000 + "]" * 5_000, 1),
        ("".join(" " * i + "- \n" for i in range(500)), MAX_DEPTH + 1),  # block style
        ('{"a": ' * 3_000 + "1" + "}" * 3_000, 1),  # JSON is YAML too
    ],
    ids=["flow", "flow-closed", "block", "json"],
)
def test_deep_nesting_is_a_finding(text, line):
    assert only_error(text) == (
        f"t.yaml:{line}: ERROR - -/-: -: YAML refused: nesting deeper than {MAX_DEPTH} levels"
    )


def test_nesting_that_aliases_bring_in_counts():
    deep = "[" * 40 + "x" + "]" * 40
    text = f"a: &deep {deep}\nb: {'[' * 30}*deep{']' * 30}\n"
    assert only_error(text) == (
        f"t.yaml:2: ERROR - -/-: -: YAML refused: nesting deeper than {MAX_DEPTH} levels "
        "(through alias *deep)"
    )


@pytest.mark.timeout(60)
@pytest.mark.parametrize("text", ["a: &a [*a]", "a: &a {b: {c: *a}}"], ids=["list", "mapping"])
def test_a_recursive_alias_is_a_finding(text):
    assert only_error(text) == (
        "t.yaml:1: ERROR - -/-: -: YAML refused: alias *a refers to a node that contains it "
        "(a recursive structure)"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\nb: " + "1" * 5_000, "cannot read int: Exceeds the limit (4300 digits)"),
        ("a: 1\nb: 2024-13-45", "cannot read timestamp: month must be in 1..12"),
    ],
    ids=["long-integer", "impossible-date"],
)
def test_a_value_python_cannot_build_is_a_finding_at_its_line(text, message):
    assert only_error(text).startswith(f"t.yaml:2: ERROR - -/-: -: YAML error: {message}")
