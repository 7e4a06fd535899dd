"""``tulle controlplane --registry``: wrong flags and connection settings are refused at once,
with the reason."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--registry", "consul"], "--registry: 'consul' is not local or kubernetes"),
        (["--kubeconfig", "kc"], "--kubeconfig and --context go with --registry kubernetes"),
        (
            ["--registry", "kubernetes", "--kubeconfig", "missing"],
            "--kubeconfig missing: no such file",
        ),
        (
            ["--registry", "kubernetes", "--kubeconfig", "kc", "--context", "staging"],
            "Kubernetes connection settings, kubeconfig kc, context staging: Context 'staging' not found",
        ),
    ],
)
def test_bad_registry_settings_are_refused_with_the_reason(
    tmp_path: Path, args: list[str], message: str
) -> None:
    (tmp_path / "kc").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: a\n"
        "clusters: [{name: a, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: a, user: {token: t}}]\n"
        "contexts: [{name: a, context: {cluster: a, user: a}}]\n"
    )
    result = subprocess.run(
        [str(BIN / "tulle"), "controlplane", "--state-dir", "state", "--xds-port", "0",
         "--secure-xds-port", "0", "--http-port", "0", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert message in result.stderr
