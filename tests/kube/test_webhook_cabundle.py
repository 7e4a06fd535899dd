"""The control plane keeps its webhook configurations' caBundle equal to the mesh root bundle:
a real ``tulle controlplane --registry kubernetes --webhook-port`` against KMock, the
configurations written (as ``tulle install`` renders them, without a caBundle) and read back
with the real ``kubectl``. One exists before the control plane starts, the other only after
(the install applies the webhooks last): both get the bundle. The bundle read back verifies the
webhook's own certificate for its Service name, as the API server does; a root rotation step
(``tulle ca stage``) moves it, and the listener serves a new certificate at once (no
restart); nothing else in the configurations changes."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import BIN, ControlPlane, _stop, start_control_plane, wait_until
from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi
from tulle.kube.install.values import values_for
from tulle.kube.install.webhooks import injector, validator

NS = "wh-cabundle"
VALUES = values_for("minimal", NS)
CONFIGURATIONS = {
    "mutatingwebhookconfiguration": injector(VALUES),
    "validatingwebhookconfiguration": validator(VALUES),
}


def apply(env: dict[str, str], obj: dict[str, Any]) -> None:
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(obj))


def read_back(env: dict[str, str], resource: str) -> dict[str, Any]:
    name = CONFIGURATIONS[resource]["metadata"]["name"]
    obj: dict[str, Any] = json.loads(kubectl(env, "get", resource, name, "-o", "json"))
    return obj


def bundles(env: dict[str, str]) -> dict[str, bytes]:
    """Each configuration's webhooks' caBundle, decoded (``b""`` when there is none)."""
    found = {}
    for resource in CONFIGURATIONS:
        webhooks = read_back(env, resource).get("webhooks") or []
        values = {w.get("clientConfig", {}).get("caBundle", "") for w in webhooks}
        assert len(values) == 1, values  # every webhook of a configuration alike
        found[resource] = base64.b64decode(values.pop())
    return found


@dataclass
class Plane:
    plane: ControlPlane
    webhook_port: int
    env: dict[str, str]

    @property
    def root(self) -> bytes:
        return (self.plane.state_dir / "root-cert.pem").read_bytes()

    def has_root(self) -> bool:
        """Both configurations carry the current root bundle."""
        root = self.root
        return all(bundle == root for bundle in bundles(self.env).values())

    def leads(self) -> bool:
        """The replica holds the Lease (its ``tulle_controlplane_leader`` gauge is 1)."""
        text = httpx.get(f"{self.plane.api}/metrics", timeout=10).text
        found = re.findall(r'^tulle_controlplane_leader\{identity="[^"]+"\} (\S+)$', text, re.M)
        return [float(value) for value in found] == [1.0]

    def served_certificate(self) -> bytes:
        """The webhook listener's certificate (PEM), as a handshake gets it now."""
        return ssl.get_server_certificate(("127.0.0.1", self.webhook_port)).encode()

    def healthz_trusting(self, bundle: bytes) -> str:
        """GET /healthz of the webhooks trusting only ``bundle``, for the Service's name."""
        context = ssl.create_default_context(cadata=bundle.decode())
        with httpx.Client(verify=context, timeout=30) as client:
            response = client.get(
                f"https://127.0.0.1:{self.webhook_port}/healthz",
                extensions={"sni_hostname": f"tulle-controlplane.{NS}.svc"},
            )
        return response.text


@pytest.fixture(scope="module")
def plane(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("wh-cabundle")
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(root)}
    apply(env, CONFIGURATIONS["mutatingwebhookconfiguration"])
    config = root / "config"
    config.mkdir()
    extra = ("--registry", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig),
             "--webhook-port", "0", "--namespace", NS)  # fmt: skip
    control = start_control_plane(root / "state", config, extra=extra)
    try:
        assert control.proc.stdout is not None
        line = control.proc.stdout.readline()
        assert line.startswith("tulle controlplane: webhooks on https://"), line
        apply(env, CONFIGURATIONS["validatingwebhookconfiguration"])  # after the start
        yield Plane(control, int(line.rsplit(":", 1)[1]), env)
    finally:
        _stop(control.proc)
        for resource, obj in CONFIGURATIONS.items():
            kubectl(env, "delete", resource, obj["metadata"]["name"], "--ignore-not-found")


def test_both_configurations_get_the_root_bundle(plane: Plane) -> None:
    wait_until(plane.has_root, timeout=60)
    for resource, rendered in CONFIGURATIONS.items():
        stored = read_back(plane.env, resource)
        webhooks = copy.deepcopy(stored["webhooks"])
        for webhook in webhooks:
            assert webhook["clientConfig"].pop("caBundle")
        assert webhooks == rendered["webhooks"]  # nothing else changed
    # what the API server would do with it: trust the webhook's certificate for its name
    assert plane.healthz_trusting(bundles(plane.env)["mutatingwebhookconfiguration"]) == "ok\n"


def test_a_root_rotation_moves_the_bundle(plane: Plane) -> None:
    wait_until(plane.has_root, timeout=60)
    # Rotation steps are the leader's. Alone, the replica leads, but on a busy machine it can
    # lose its Lease for a while (renewals timing out for 15 s) and take it back: stage then.
    wait_until(plane.leads, timeout=60)
    before, served = plane.root, plane.served_certificate()
    staged = subprocess.run(
        [str(BIN / "tulle"), "ca", "stage", "--server", plane.plane.api,
         "--token", plane.plane.token],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert staged.returncode == 0, staged.stderr
    wait_until(lambda: plane.root != before, timeout=30)
    assert plane.root.count(b"BEGIN CERTIFICATE") == 2
    wait_until(plane.has_root, timeout=30)
    new = bundles(plane.env)["validatingwebhookconfiguration"]
    assert plane.healthz_trusting(new) == "ok\n"
    # the listener took a certificate issued after the change, without a restart
    assert plane.served_certificate() != served
    assert plane.plane.proc.poll() is None
