"""The import-linter contracts of pyproject.toml hold, and they do catch a forbidden import."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def run_contracts(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--config", str(tree / "pyproject.toml")],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its contracts, to break on purpose."""
    shutil.copytree(
        ROOT / "tulle", tmp_path / "tulle", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_contracts_hold(tree):
    result = run_contracts(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_lower_layer_importing_a_higher_one_breaks_the_layers(tree):
    (tree / "tulle" / "api" / "sneaky.py").write_text(
        '"""Breaks the layers on purpose."""\n\nimport tulle.cli.main  # noqa: F401\n'
    )
    result = run_contracts(tree)
    assert result.returncode == 1
    assert "Layers: imports flow downward only BROKEN" in result.stdout
    assert "tulle.api.sneaky -> tulle.cli.main" in result.stdout


def test_a_part_importing_another_part_breaks_the_layers(tree):
    for part in ("proxy", "control"):
        package = tree / "tulle" / part
        package.mkdir(exist_ok=True)
        if not (package / "__init__.py").exists():
            (package / "__init__.py").write_text(f'"""{part}"""\n')
    (tree / "tulle" / "proxy" / "cheat.py").write_text("import tulle.control  # noqa: F401\n")
    result = run_contracts(tree)
    assert result.returncode == 1
    assert "tulle.proxy.cheat -> tulle.control" in result.stdout


def test_only_tulle_kube_may_import_a_kubernetes_client(tree):
    (tree / "tulle" / "api" / "cluster.py").write_text("import kubernetes  # noqa: F401\n")
    result = run_contracts(tree)
    assert result.returncode == 1
    assert "Only tulle.kube imports a Kubernetes client BROKEN" in result.stdout
    assert "tulle.api.cluster -> kubernetes" in result.stdout
