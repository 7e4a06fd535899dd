"""``tulle controlplane --registry``: wrong flags and connection settings are refused at once,
with the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.e2e.conftest import BIN
from tulle.cli.main import app

KUBECONFIG = """\
apiVersion: v1
kind: Config
current-context: a
clusters: [{name: a, cluster: {server: 'http://127.0.0.1:9'}}]
users: [{name: a, user: {token: t}}]
contexts: [{name: a, context: {cluster: a, user: a}}]
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--registry", "consul"], "--registry: 'consul' is not local or kubernetes"),
        (["--kubeconfig", "kc"], "--kubeconfig and --context go with --registry kubernetes"),
        (
            ["--registry", "kubernetes", "--kubeconfig", "/nonexistent/kc"],
            "--kubeconfig /nonexistent/kc: no such file",
        ),
    ],
)
def test_bad_registry_flags_are_refused_with_the_reason(
    tmp_path: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["controlplane", "--state-dir", str(tmp_path), *args])
    assert result.exit_code == 2
    assert message in result.output


def test_an_unknown_context_is_refused_with_the_kubeconfig_and_context(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(KUBECONFIG)
    result = subprocess.run(
        [str(BIN / "tulle"), "controlplane", "--state-dir", "state", "--xds-port", "0",
         "--secure-xds-port", "0", "--http-port", "0", "--registry", "kubernetes",
         "--kubeconfig", "kc", "--context", "staging"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert (
        "error: Kubernetes connection settings, kubeconfig kc, context staging: "
        "Context 'staging' not found"
    ) in result.stderr
