"""Each file of the broken corpus ends with the exact findings it must produce, one per line:

    # expect: LINE: SEVERITY KIND NAMESPACE/NAME: FIELD.PATH: message

``{file}`` in a message stands for the file's own path. Every file is validated together with
``_services.yaml`` (the services the cases refer to), which must produce no finding itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api import validate_paths

BROKEN = Path(__file__).parent / "corpus" / "broken"
SERVICES = BROKEN / "_services.yaml"
CASES = sorted(p for p in BROKEN.glob("*.yaml") if not p.name.startswith("_"))
PREFIX = "# expect: "


def expected_findings(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [
        f"{path}:" + line[len(PREFIX) :].replace("{file}", str(path))
        for line in lines
        if line.startswith(PREFIX)
    ]


def test_the_shared_services_are_valid():
    result = validate_paths([SERVICES])
    assert [f.format() for f in result.findings] == []


def test_every_case_expects_something():
    assert len(CASES) >= 20
    for case in CASES:
        assert expected_findings(case), f"{case.name} has no '# expect:' line"


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_findings_are_exactly_the_expected_ones(case: Path):
    result = validate_paths([case, SERVICES])
    assert [f.format() for f in result.findings] == expected_findings(case)
    if any(f.severity.value == "ERROR" for f in result.findings):
        assert result.model is None
