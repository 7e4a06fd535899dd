"""Every input a fuzz target found failing (fuzz/crashes/<target>/) is fed to the target again,
with all its checks: fixed, it passes. One that still fails a check pending a fix elsewhere
(fuzz/support/checks.py PENDING, where each is reported) is an expected failure; when the fix
lands, its entry must go (the last test says which have no failing input left)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from fuzz.support.checks import PENDING, CheckError
from fuzz.support.runner import FUZZ
from tulle.api import validate_text

FOUND = sorted(path for path in (FUZZ / "crashes").glob("*/*") if path.is_file())


def failure_of(path: Path) -> CheckError | None:
    """The check the input fails now (None: it passes them all)."""
    target = importlib.import_module(f"fuzz.{path.parent.name}")
    try:
        target.one_input(path.read_bytes())
    except CheckError as failure:
        return failure
    return None


@pytest.mark.parametrize("path", FOUND, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_a_found_input_passes_every_check(path):
    failure = failure_of(path)
    if failure is not None and failure.name in PENDING:
        pytest.xfail(f"{failure.name}: {PENDING[failure.name]}")
    assert failure is None, str(failure)


def test_every_pending_check_still_has_a_failing_input():
    failing = {failure.name for failure in map(failure_of, FOUND) if failure is not None}
    fixed = sorted(set(PENDING) - failing)
    assert not fixed, f"no input fails these any more: remove them from PENDING: {fixed}"


PORT_LEVEL = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: reviews, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews}}
  portLevelMtls: {%s: {mode: DISABLE}}
"""


@pytest.mark.parametrize("key", ["9090", '"9090"'])
def test_port_level_mtls_takes_a_port_as_yaml_or_json_writes_it(key):
    """Found by config_loader (port-level-mtls-json-keys): the API shows a resource as JSON,
    where a map's keys are strings; applied again, ``"9090"`` was refused as not a port."""
    result = validate_text(PORT_LEVEL % key)
    assert [f.format() for f in result.findings] == []
    (resource,) = result.resources
    assert list(resource.spec.port_level_mtls) == [9090]  # type: ignore[attr-defined]


@pytest.mark.parametrize("key", ['"x"', '"99999"', '"0"', '"\uff19\uff10"'])
def test_port_level_mtls_still_refuses_what_is_not_a_port(key):
    result = validate_text(PORT_LEVEL % key)
    assert [f.field for f in result.findings] == [f"spec.portLevelMtls.{key.strip(chr(34))}"]
