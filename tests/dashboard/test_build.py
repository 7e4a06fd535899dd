"""The committed build of the dashboard (tulle/dashboard/static) is the build of its committed
sources (dashboard/): a change to the sources without ``make dashboard`` fails here. And what
the wheel ships: every built file matches pyproject's package-data."""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib

from tests.local.conftest import REPO
from tulle.dashboard import BUILD_INFO, STATIC, assets, sources_hash


def test_the_build_is_of_the_sources():
    built = json.loads((STATIC / BUILD_INFO).read_text())["sources"]
    assert built == sources_hash(REPO / "dashboard"), (
        "tulle/dashboard/static was not built from dashboard/ as it is: run make dashboard"
    )


def test_the_page_loads_only_built_files():
    assert assets() == STATIC
    index = (STATIC / "index.html").read_text()
    for reference in re.findall(r'(?:src|href)="/dashboard/([^"]+)"', index):
        assert (STATIC / reference).is_file(), reference
    assert "/src/" not in index  # the sources' paths were replaced by the build's


def test_the_wheel_ships_every_built_file():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["tulle.dashboard"]
    package = STATIC.parent
    for path in STATIC.rglob("*"):
        if path.is_file():
            name = path.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(name, p) for p in patterns), name
