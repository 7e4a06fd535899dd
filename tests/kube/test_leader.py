"""Two control-plane replicas, one leader (issue 18 §3): real ``tulle controlplane --registry
kubernetes`` processes against KMock elect a leader with the Lease
``tulle-controlplane-leader`` (read back with the real ``kubectl``); both serve; when the
leader stops it gives the Lease up and the other takes over. The elector's rules (expiry as
observed, renewals, conflicts) are checked in this process against the same KMock."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube import AsyncClient, KubeConfig

from tests.e2e.conftest import ControlPlane, _stop, start_control_plane, wait_until
from tests.kube.conftest import kubectl
from tests.kube.kmock_server import KubeApi
from tulle.api.kinds import KINDS
from tulle.kube.install.crds import crd
from tulle.kube.install.names import INSTANCE, LEADER_LEASE
from tulle.kube.leader import LeaderElector
from tulle.kube.root_cert import RootCertPublisher

pytestmark = pytest.mark.timeout(180)

NS = "leader-system"


def lease(env: dict[str, str]) -> dict[str, Any]:
    """The Lease's spec, as kubectl reads it ({} while there is none)."""
    result = subprocess.run(
        ["kubectl", "get", "lease", LEADER_LEASE, "-n", NS, "-o", "json"],
        check=False, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if result.returncode != 0:
        return {}
    spec: dict[str, Any] = json.loads(result.stdout).get("spec") or {}
    return spec


def leader_metric(plane: ControlPlane) -> dict[str, float]:
    """``tulle_controlplane_leader`` by identity, from the replica's /metrics."""
    text = httpx.get(f"{plane.api}/metrics", timeout=10).text
    found = re.findall(r'^tulle_controlplane_leader\{identity="([^"]+)"\} (\S+)$', text, re.M)
    return {identity: float(value) for identity, value in found}


@contextmanager
def pod_name(name: str) -> Iterator[None]:
    """``$POD_NAME`` for a control plane started meanwhile (as the Deployment sets it)."""
    before = os.environ.get("POD_NAME")
    os.environ["POD_NAME"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["POD_NAME"]
        else:
            os.environ["POD_NAME"] = before


@pytest.fixture(scope="module")
def env(kube_api: KubeApi, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    root = tmp_path_factory.mktemp("leader")
    env = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig), "HOME": str(root)}
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=json.dumps(body))
    yield env
    kubectl(env, "delete", "configmaps", "-A", "-l", f"{INSTANCE}={NS}")
    kubectl(env, "delete", "--ignore-not-found", "secret", "tulle-ca-secret", "-n", NS)
    kubectl(env, "delete", "--ignore-not-found", "lease", LEADER_LEASE, "-n", NS)


def start(env: dict[str, str], root: Path, name: str, namespace: str = NS) -> ControlPlane:
    config = root / name / "config"
    config.mkdir(parents=True)
    with pod_name(name):
        return start_control_plane(
            root / name / "state", config, insecure_xds=False,
            extra=("--registry", "kubernetes", "--kubeconfig", env["KUBECONFIG"],
                   "--namespace", namespace),
        )  # fmt: skip


def test_two_replicas_one_leader_and_a_takeover(env: dict[str, str], tmp_path: Path) -> None:
    first = start(env, tmp_path, "replica-a")
    second: ControlPlane | None = None
    try:
        wait_until(lambda: leader_metric(first) == {"replica-a": 1.0}, timeout=30)
        assert lease(env)["holderIdentity"] == "replica-a"
        second = start(env, tmp_path, "replica-b")
        wait_until(lambda: leader_metric(second) == {"replica-b": 0.0}, timeout=30)
        # Both serve (each its own xDS and API); the first still leads, renewing its Lease.
        for plane in (first, second):
            assert httpx.get(f"{plane.api}/healthz", timeout=10).status_code == 200
        renewed = lease(env)["renewTime"]
        wait_until(lambda: lease(env)["renewTime"] != renewed, timeout=30)
        assert lease(env)["holderIdentity"] == "replica-a"
        assert leader_metric(first) == {"replica-a": 1.0}
        assert leader_metric(second) == {"replica-b": 0.0}
        # Rotation is the leader's: the follower refuses a step, naming the leader; a step the
        # leader takes reaches the follower through the CA's Secret (its bundle, its CA).
        refused = httpx.post(f"{second.api}/api/v1/ca/stage", headers=second.auth, timeout=10)
        assert refused.status_code == 409
        assert "does not lead (the leader is replica-a)" in refused.json()["error"]
        bundle = (second.state_dir / "root-cert.pem").read_text()
        assert bundle == (first.state_dir / "root-cert.pem").read_text()
        staged = httpx.post(f"{first.api}/api/v1/ca/stage", headers=first.auth, timeout=10)
        assert staged.status_code == 200, staged.text
        rotated = (first.state_dir / "root-cert.pem").read_text()
        assert rotated.count("BEGIN CERTIFICATE") == 2
        wait_until(lambda: (second.state_dir / "root-cert.pem").read_text() == rotated, timeout=30)
        ca = httpx.get(f"{second.api}/api/v1/ca", headers=second.auth, timeout=10).json()
        assert ca["staged"] == staged.json()["staged"]
        # The leader stops: it gives the Lease up, and the other takes over within seconds.
        _stop(first.proc)
        wait_until(lambda: lease(env).get("holderIdentity") == "replica-b", timeout=30)
        wait_until(lambda: leader_metric(second) == {"replica-b": 1.0}, timeout=30)
        assert lease(env)["leaseTransitions"] == 1
    finally:
        _stop(first.proc)
        if second is not None:
            _stop(second.proc)


# --- the elector's rules, in this process ------------------------------------------------------


def test_a_silent_holder_is_replaced_only_after_its_lease_as_observed(kube_api: KubeApi) -> None:
    """``b`` takes over from ``a`` (which stopped renewing without giving up the Lease) only
    once the record has not changed for ``lease_seconds`` on ``b``'s own clock; a renewal by
    ``a`` restarts that wait."""
    now = [1000.0]
    changes: list[tuple[str, bool]] = []

    def elector(identity: str) -> LeaderElector:
        config = KubeConfig.from_file(kube_api.kubeconfig).get()
        return LeaderElector(
            AsyncClient(config=config), NS, identity,
            lambda leading: changes.append((identity, leading)),
            name="unit-lease", lease_seconds=15, clock=lambda: now[0],
        )  # fmt: skip

    async def main() -> None:
        a, b = elector("a"), elector("b")
        try:
            await a.step()  # creates the Lease
            assert (a.leading, changes) == (True, [("a", True)])
            await b.step()  # observes a's record
            assert not b.leading
            now[0] += 14
            await b.step()
            assert not b.leading  # 14 s unchanged: not yet
            await a.step()  # a renews: b's wait starts again once b sees it
            await b.step()
            assert not b.leading
            now[0] += 14
            await b.step()
            assert not b.leading
            now[0] += 2
            await b.step()  # 16 s without a change as b saw it: b takes over
            assert b.leading
            assert changes[-1] == ("b", True)
            await a.step()  # a reads b's record: no longer leading
            assert not a.leading
            assert changes[-1] == ("a", False)
            assert b.transitions == 1
        finally:
            await a.client.close()
            await b.client.close()

    asyncio.run(main())


def test_only_the_leader_publishes_the_root_certificate(
    kube_api: KubeApi, env: dict[str, str]
) -> None:
    """A follower's publisher writes nothing; once it leads, it publishes."""
    leading = [False]

    async def main() -> None:
        config = KubeConfig.from_file(kube_api.kubeconfig).get()
        publisher = RootCertPublisher(AsyncClient(config=config), NS, lambda: b"PEM\n")
        publisher.may_write = lambda: leading[0]
        try:
            assert await publisher.sync()
            assert publisher.published == {}
            leading[0] = True
            assert await publisher.sync()
            assert publisher.published[NS] in ("created", "updated")
        finally:
            await publisher.client.close()

    asyncio.run(main())
    data = json.loads(
        kubectl(env, "get", "configmap", "tulle-ca-root-cert", "-n", NS, "-o", "json")
    )
    assert data["data"] == {"root-cert.pem": "PEM\n"}


STATUS_NS = "leader-status"
HOST = f"web.{STATUS_NS}.svc.cluster.local"
API_HOST = f"api.{STATUS_NS}.svc.cluster.local"


def test_a_follower_writes_no_status_until_it_leads(env: dict[str, str], tmp_path: Path) -> None:
    """A follower judges the cluster's config as the leader does but writes no status; when it
    becomes the leader it writes the verdicts of the config in force at once."""
    apply_all(env, *(crd(model) for model in KINDS))
    apply_all(
        env,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": STATUS_NS}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "web", "namespace": STATUS_NS},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "api", "namespace": STATUS_NS},
         "spec": {"ports": [{"name": "http", "port": 80}]}},
        {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
         "metadata": {"name": LEADER_LEASE, "namespace": STATUS_NS},
         "spec": {"holderIdentity": "another-replica", "leaseDurationSeconds": 3600,
                  "renewTime": "2026-01-01T00:00:00.000000Z"}},
    )  # fmt: skip
    plane = start(env, tmp_path, "replica-c", STATUS_NS)
    try:
        wait_until(lambda: leader_metric(plane) == {"replica-c": 0.0}, timeout=30)
        apply_all(env, {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": STATUS_NS},
            "spec": {"hosts": [HOST], "http": [{"route": [{"destination": {"host": HOST}}]}]},
        })  # fmt: skip

        def in_force(name: str = "web") -> bool:
            answer = httpx.get(
                f"{plane.api}/api/v1/resources",
                params={"kind": "VirtualService", "namespace": STATUS_NS, "name": name},
                headers=plane.auth, timeout=10,
            )  # fmt: skip
            return bool(answer.json().get("items"))

        wait_until(in_force, timeout=30)  # judged (and accepted) by the follower
        # A later change judged too: by then a leader would long have written the first verdict
        # (it writes right after judging); the follower wrote nothing.
        apply_all(env, {
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "web-2", "namespace": STATUS_NS},
            "spec": {"hosts": [API_HOST],
                     "http": [{"route": [{"destination": {"host": API_HOST}}]}]},
        })  # fmt: skip
        wait_until(lambda: in_force("web-2"), timeout=30)
        assert vs_conditions(env) == []
        # The holder gives the Lease up: the follower takes over and writes the verdict.
        kubectl(
            env, "patch", "lease", LEADER_LEASE, "-n", STATUS_NS, "--type", "merge",
            "-p", json.dumps({"spec": {"holderIdentity": None, "leaseDurationSeconds": 1}}),
        )  # fmt: skip
        wait_until(lambda: leader_metric(plane) == {"replica-c": 1.0}, timeout=30)
        wait_until(lambda: [c.get("status") for c in vs_conditions(env)] == ["True"], timeout=30)
    finally:
        _stop(plane.proc)
        kubectl(env, "delete", "--ignore-not-found", VS_RESOURCE, "web", "web-2", "-n", STATUS_NS)
        kubectl(env, "delete", "--ignore-not-found", "lease", LEADER_LEASE, "-n", STATUS_NS)
        kubectl(env, "delete", "configmaps", "-A", "-l", f"{INSTANCE}={STATUS_NS}")
        kubectl(env, "delete", "--ignore-not-found", "secret", "tulle-ca-secret", "-n", STATUS_NS)


VS_RESOURCE = "virtualservices.v1.networking.istio.io"


def vs_conditions(env: dict[str, str]) -> list[dict[str, Any]]:
    obj = json.loads(kubectl(env, "get", VS_RESOURCE, "web", "-n", STATUS_NS, "-o", "json"))
    conditions: list[dict[str, Any]] = (obj.get("status") or {}).get("conditions") or []
    return conditions


def apply_all(env: dict[str, str], *objects: dict[str, Any]) -> None:
    body = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    kubectl(env, "apply", "--validate=false", "-f", "-", stdin=body)
