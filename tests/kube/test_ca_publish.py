"""The mesh CA with ``--registry kubernetes`` (issue 18 §3): its roots in the Secret
``tulle-ca-secret`` of the control plane's namespace, its root certificate in the ConfigMap
``tulle-ca-root-cert`` of every namespace. Real ``tulle controlplane`` processes against KMock,
everything read back with the real ``kubectl``."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import ControlPlane, _stop, start_control_plane, wait_until
from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi
from tulle.kube.install.names import INSTANCE

pytestmark = pytest.mark.timeout(180)

SYSTEM = "ca-publish-system"
APPS = ("ca-publish-a", "ca-publish-b")


def namespace(env: dict[str, str], name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(body))


def root_cert(env: dict[str, str], ns: str) -> str | None:
    """The ``root-cert.pem`` of ``tulle-ca-root-cert`` in ``ns`` (None: no such ConfigMap)."""
    result = subprocess.run(
        ["kubectl", "get", "configmap", "tulle-ca-root-cert", "-n", ns, "-o", "json"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        assert "NotFound" in result.stderr or "not found" in result.stderr, result.stderr
        return None
    data: dict[str, str] = json.loads(result.stdout).get("data") or {}
    return data.get("root-cert.pem")


def ca_secret(env: dict[str, str]) -> dict[str, bytes]:
    secret = json.loads(
        kubectl(env, "get", "secret", "tulle-ca-secret", "-n", SYSTEM, "-o", "json")
    )
    return {key: base64.b64decode(value) for key, value in secret["data"].items()}


@dataclass
class Cluster:
    env: dict[str, str]
    root: Path
    plane: ControlPlane

    def start(self, name: str) -> ControlPlane:
        config = self.root / name / "config"
        config.mkdir(parents=True)
        return start_control_plane(
            self.root / name / "state", config, insecure_xds=False,
            extra=("--registry", "kubernetes", "--kubeconfig", self.env["KUBECONFIG"],
                   "--namespace", SYSTEM),
        )  # fmt: skip

    def bundle(self, plane: ControlPlane | None = None) -> str:
        return ((plane or self.plane).state_dir / "root-cert.pem").read_text()


@pytest.fixture(scope="module")
def cluster(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("ca-publish")
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(root)}
    for name in (SYSTEM, *APPS):
        namespace(env, name)
    cluster = Cluster(env, root, None)  # type: ignore[arg-type]
    cluster.plane = cluster.start("first")
    try:
        yield cluster
    finally:
        _stop(cluster.plane.proc)
        kubectl(env, "delete", "configmaps", "-A", "-l", f"{INSTANCE}={SYSTEM}")
        kubectl(env, "delete", "--ignore-not-found", "secret", "tulle-ca-secret", "-n", SYSTEM)


def test_the_root_certificate_is_in_every_namespace(cluster: Cluster) -> None:
    bundle = cluster.bundle()
    assert bundle.startswith("-----BEGIN CERTIFICATE-----")
    for ns in (SYSTEM, *APPS):
        wait_until(lambda ns=ns: root_cert(cluster.env, ns) == bundle, timeout=30)
    # A namespace made later gets it too, without waiting for the minute's resync.
    namespace(cluster.env, "ca-publish-late")
    wait_until(lambda: root_cert(cluster.env, "ca-publish-late") == bundle, timeout=30)


def test_the_ca_lives_in_a_secret_every_replica_shares(cluster: Cluster) -> None:
    files = ca_secret(cluster.env)
    state = json.loads(files["state.json"])
    (active,) = state["trusted"]
    assert state["active"] == active
    assert files[f"roots.{active}.cert.pem"].decode() == cluster.bundle()
    assert files[f"roots.{active}.key.pem"].startswith(b"-----BEGIN PRIVATE KEY-----")
    assert set(files) == {"state.json", f"roots.{active}.cert.pem", f"roots.{active}.key.pem"}
    # A second replica (its own, empty state directory) signs with the same root.
    second = cluster.start("second")
    try:
        assert cluster.bundle(second) == cluster.bundle()
        key = second.state_dir / "ca" / "roots" / active / "key.pem"
        assert key.read_bytes() == files[f"roots.{active}.key.pem"]
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    finally:
        _stop(second.proc)


def test_a_rotation_reaches_the_secret_and_the_config_maps(cluster: Cluster) -> None:
    before = cluster.bundle()
    # Rotation steps are the leader's: this, the only replica, leads once it holds the Lease.
    leads = re.compile(r'^tulle_controlplane_leader\{identity="[^"]+"\} 1\.0$', re.M)
    wait_until(lambda: leads.search(httpx.get(f"{cluster.plane.api}/metrics").text), timeout=30)
    answer = httpx.post(f"{cluster.plane.api}/api/v1/ca/stage", headers=cluster.plane.auth)
    assert answer.status_code == 200, answer.text
    after = cluster.bundle()
    assert after != before
    assert after.count("BEGIN CERTIFICATE") == 2  # the staged root is trusted before it signs
    for ns in (SYSTEM, *APPS):
        wait_until(lambda ns=ns: root_cert(cluster.env, ns) == after, timeout=30)

    def staged() -> dict[str, Any]:
        state: dict[str, Any] = json.loads(ca_secret(cluster.env)["state.json"])
        return state

    wait_until(lambda: staged().get("staged") is not None, timeout=30)
    state = staged()
    assert len(state["trusted"]) == 2
    files = ca_secret(cluster.env)
    assert f"roots.{state['staged']}.key.pem" in files


def test_a_broken_secret_stops_the_control_plane_naming_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    env = cluster.env
    body = {
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "tulle-ca-secret", "namespace": "ca-publish-broken"},
        "data": {"state.json": base64.b64encode(b'{"active": "x"}').decode()},
    }  # fmt: skip
    namespace(env, "ca-publish-broken")
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(body))
    config = tmp_path / "config"
    config.mkdir()
    result = subprocess.run(
        [str(Path(sys.executable).parent / "tulle"), "controlplane", "-f", str(config),
         "--state-dir", str(tmp_path / "state"), "--xds-port", "0", "--secure-xds-port", "0",
         "--http-port", "0", "--registry", "kubernetes", "--kubeconfig", env["KUBECONFIG"],
         "--namespace", "ca-publish-broken"],
        check=False, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "error: the CA in Secret ca-publish-broken/tulle-ca-secret: " in result.stderr
    kubectl(env, "delete", "secret", "tulle-ca-secret", "-n", "ca-publish-broken")
