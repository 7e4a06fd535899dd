"""``tulle validate`` and ``tulle version`` as a user runs them: the installed console script,
in a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TULLE = shutil.which("tulle", path=str(Path(sys.executable).parent)) or "tulle"


def tulle(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [TULLE, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_version():
    result = tulle("version")
    assert result.returncode == 0
    assert result.stdout.startswith("tulle 0.1.0 (Python 3.")


def test_valid_directory_exits_zero():
    """The shop's directory holds its Kubernetes manifests too (examples/shop/kubernetes/):
    each Deployment and ServiceAccount is one INFO line, its Services are hosts, nothing else
    is said."""
    result = tulle("validate", "examples/shop")
    assert result.returncode == 0, result.stdout + result.stderr
    skipped = sorted(
        (line.split(":")[0], line.split(" ")[2])
        for line in result.stdout.splitlines()
        if line.endswith("is not mesh config: skipped") and " INFO " in line
    )
    assert len(skipped) == len(result.stdout.splitlines()) == 12
    assert skipped.count(("examples/shop/kubernetes/catalog.yaml", "Deployment")) == 2
    assert {kind for _, kind in skipped} == {"Deployment", "ServiceAccount"}
    assert result.stderr.strip() == "23 resources, 0 errors, 0 warnings, 12 info"
    as_json = json.loads(tulle("validate", "-o", "json", "examples/shop").stdout)
    counts = {key: as_json[key] for key in ("resources", "errors", "warnings", "info")}
    assert counts == {"resources": 23, "errors": 0, "warnings": 0, "info": 12}
    assert {f["severity"] for f in as_json["findings"]} == {"INFO"}


def test_broken_example_prints_one_line_per_finding_and_exits_one():
    result = tulle("validate", "examples/broken/")
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines == [
        "examples/broken/mistakes.yaml:9: ERROR VirtualService default/reviews: spec.http[0].route:"
        " weights add up to 0: give at least one destination a weight",
        "examples/broken/mistakes.yaml:12: ERROR VirtualService default/reviews:"
        " spec.http[0].route[1].destination.subset: subset 'v3' of"
        " reviews.default.svc.cluster.local is not defined (defined: v1)",
        "examples/broken/mistakes.yaml:26: ERROR VirtualService default/ratings:"
        " spec.http[0].retries.perTryTimout: unknown field; did you mean 'perTryTimeout'?",
        "examples/broken/mistakes.yaml:27: ERROR VirtualService default/ratings:"
        " spec.http[0].timeout: invalid duration '10 seconds': write a number and a unit"
        " (h, m, s, ms, us, ns), e.g. '1.5s', '100ms', '1m'",
    ]
    assert "4 errors" in result.stderr
    assert "Traceback" not in result.stderr


def test_json_output():
    result = tulle("validate", "-o", "json", "examples/broken/mistakes.yaml")
    assert result.returncode == 1
    payload = json.loads(result.stdout)
    assert (payload["resources"], payload["errors"], payload["warnings"]) == (4, 4, 0)
    first = payload["findings"][0]
    assert first == {
        "file": "examples/broken/mistakes.yaml",
        "line": 9,
        "severity": "ERROR",
        "kind": "VirtualService",
        "namespace": "default",
        "name": "reviews",
        "field": "spec.http[0].route",
        "message": "weights add up to 0: give at least one destination a weight",
    }


def test_warnings_alone_exit_zero(tmp_path):
    config = tmp_path / "mesh.yaml"
    config.write_text(
        """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v2, labels: {version: v2}}]
""",
        encoding="utf-8",
    )
    result = tulle("validate", str(config))
    assert result.returncode == 0
    assert result.stdout.startswith(f"{config}:13: WARNING DestinationRule default/web:")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe not utf-8", "not UTF-8 text"),
        (b"a: [unclosed", "YAML syntax error"),
    ],
)
def test_unreadable_files_are_findings_not_tracebacks(tmp_path, content, message):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    result = tulle("validate", str(path))
    assert result.returncode == 1
    assert message in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_missing_path_and_empty_directory(tmp_path):
    result = tulle("validate", str(tmp_path / "nope.yaml"), str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope.yaml'}:0: ERROR - -/-: -: no such file or directory" in result.stdout
    assert "directory holds no .yaml or .yml file" in result.stdout
    assert "Traceback" not in result.stderr


def test_usage_errors_are_one_clear_message():
    result = tulle("validate", "-o", "xml", "examples/shop")
    assert result.returncode == 2
    assert "Invalid value for '--output' / '-o'" in result.stderr
    assert "Traceback" not in result.stderr


ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews, namespace: shop}
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: unrelated, namespace: shop}
data: {a: b}
"""
UNDEFINED = (
    ": ERROR VirtualService shop/reviews: spec.http[0].route[0].destination.host: host reviews"
    " (reviews.shop.svc.cluster.local) is not defined by any Workload, Service or ServiceEntry"
)


def test_an_undefined_host_warns_unless_strict_hosts_or_tulle_up(tmp_path):
    """A route file alone: its host would be a Kubernetes Service elsewhere (a WARNING, exit 0);
    --strict-hosts makes it an ERROR, as tulle up does; --hosts-from a Service manifest defines
    it (its other documents say nothing)."""
    route = tmp_path / "route.yaml"
    route.write_text(ROUTE)
    (tmp_path / "kube").mkdir()
    (tmp_path / "kube" / "reviews.yaml").write_text(SERVICE)
    alone = tulle("validate", str(route))
    assert alone.returncode == 0
    assert alone.stdout.splitlines() == [
        f"{route}:8{UNDEFINED.replace('ERROR', 'WARNING')} of these files: it must exist"
        " elsewhere (a Kubernetes Service, a ServiceEntry) for this config to apply"
    ]
    assert alone.stderr.strip() == "1 resources, 0 errors, 1 warnings"
    strict = tulle("validate", str(route), "--strict-hosts")  # beside a Workload alike: tests/api
    assert strict.returncode == 1
    assert strict.stdout.splitlines() == [f"{route}:8{UNDEFINED}"]
    # tulle up runs the files as the whole mesh: the ERROR, and nothing starts
    up = tulle("up", "-f", str(route), "--state-dir", str(tmp_path / "state"), "--api-port", "0",
               "--xds-port", "0")  # fmt: skip
    assert up.returncode == 1
    assert up.stderr.splitlines() == [
        "error: the mesh config has errors:",
        f"{route}:8{UNDEFINED}",
    ]
    found = tulle("validate", str(route), "--hosts-from", str(tmp_path / "kube"), "--strict-hosts")
    assert (found.returncode, found.stdout) == (0, "")
    assert found.stderr.strip() == "1 resources, 0 errors, 0 warnings"
    missing = tulle("validate", str(route), "--hosts-from", str(tmp_path / "absent"))
    assert missing.returncode == 1
    assert missing.stdout.splitlines()[0] == (
        f"{tmp_path / 'absent'}:0: ERROR - -/-: -: no such file or directory"
    )


def test_help_documents_the_host_options():
    result = tulle("validate", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.replace("\u2502", " ").split())  # the box's sides
    assert "--hosts-from" in text
    assert "Repeatable." in text
    assert "--strict-hosts" in text
    assert "A host no file defines is an ERROR even when the files hold no Workload." in text
