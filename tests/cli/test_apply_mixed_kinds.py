"""``tulle apply`` of files that mix kinds, against a control plane whose own ``-f`` directory
mixes them too: a route to a Service of those files is accepted, an applied file's Service is
created and its Deployment skipped, and each command shows the INFO lines of its own file only
(not those of the control plane's files)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import BIN, ControlPlane, _stop, start_control_plane


def deployment_and_service(name: str) -> str:
    return (
        f"apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}-v1}}\n"
        f"spec: {{selector: {{matchLabels: {{app: {name}}}}}}}\n---\n"
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec: {{ports: [{{name: http, port: 9080}}]}}\n"
    )


ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}], timeout: 1s}]
"""


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    root = tmp_path_factory.mktemp("apply-mixed")
    (root / "config").mkdir()
    (root / "config" / "ratings.yaml").write_text(deployment_and_service("ratings"))
    started = start_control_plane(root / "state", root / "config")
    yield started
    _stop(started.proc)


def tulle(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "tulle"), *args, "--server", plane.api, "--token", plane.token],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_apply_shows_only_its_own_files_skipped_kinds(plane: ControlPlane, tmp_path: Path):
    route = tmp_path / "route.yaml"
    route.write_text(ROUTE)
    applied = tulle(plane, "apply", "-f", str(route))
    assert (applied.returncode, applied.stdout, applied.stderr) == (
        0, "VirtualService default/ratings created\n", "",
    )  # fmt: skip
    mixed = tmp_path / "details.yaml"
    mixed.write_text(deployment_and_service("details"))
    applied = tulle(plane, "apply", "-f", str(mixed))
    assert (applied.returncode, applied.stdout) == (0, "Service default/details created\n")
    assert applied.stderr.splitlines() == [
        f"{mixed}:1: INFO Deployment default/details-v1: -: apps/v1 Deployment is not mesh "
        "config: skipped"
    ]
    listed = tulle(plane, "get", "-o", "json")
    kinds = sorted((r["kind"], r["metadata"]["name"]) for r in json.loads(listed.stdout))
    assert kinds == [("Service", "details"), ("Service", "ratings"), ("VirtualService", "ratings")]
