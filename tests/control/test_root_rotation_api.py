"""Root rotation through the HTTP API (``/api/v1/ca``), with workloads as the sidecar and the
library run them (Tulle's own ADS client and certificate keeper on the secure xDS port): every
step reaches them over ADS (Secret ``ROOTCA``) and they renew at once, although their
certificates live an hour; each unsafe step is refused with the workload it waits for; a
workload keeps reaching the CA and ADS after the control plane's own certificate moved to the
new root; at the end only the new root is trusted anywhere. A plug-in CA refuses every step and
says what to do instead."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.helpers import write_user_ca
from tulle.control.app import ControlPlane
from tulle.control.rotation import PLUGIN_REFUSAL
from tulle.control.serving import PluginCa
from tulle.security.certificates import issued_by, load_certificates
from tulle.security.renewal import CertificateKeeper
from tulle.security.rootstore import root_name
from tulle.security.tokens import BootstrapTokens, read_token_file
from tulle.xds.client import XdsClient
from tulle.xds.workload_ca import workload_certificates

pytestmark = pytest.mark.timeout(120)

MESH = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: tulle-system}
spec: {workloadCertificateLifetime: 1h}
"""


@dataclass
class Workload:
    """A workload's ADS stream and certificate keeper, as a sidecar runs them."""

    xds: XdsClient
    keeper: CertificateKeeper
    tasks: list[asyncio.Task[None]]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.tasks.clear()

    def reconnect(self) -> None:
        """Open the ADS stream again (the keeper, if it ran, is left as it was)."""
        self.tasks.append(asyncio.create_task(self.xds.run()))


def workload(plane: ControlPlane, name: str, certificates: bool = True) -> Workload:
    """Replica ``<name>-0`` of namespace default, connected to ``plane``'s secure ADS port."""
    state = plane.state_dir
    token = BootstrapTokens(state).issue("default", name, f"{name}-0.default")
    node = f"sidecar~127.0.0.1~{name}-0.default~default.svc.cluster.local"
    xds = XdsClient(f"127.0.0.1:{plane.secure_xds_port}", node, lambda resources, version: None)
    xds.tls = ssl.create_default_context(cafile=str(state / "root-cert.pem"))
    xds.credential = lambda: read_token_file(token)
    keeper = workload_certificates(xds)
    tasks = [asyncio.create_task(xds.run())]
    if certificates:
        tasks.append(asyncio.create_task(keeper.run()))
    return Workload(xds, keeper, tasks)


def renewed_since(workload: Workload, serial: int) -> bool:
    """Whether ``workload`` holds a certificate other than the one of ``serial``."""
    current = workload.keeper.current
    return current is not None and current.serial != serial


async def until(condition: Callable[[], Any], timeout: float = 60.0) -> None:
    """Wait for ``condition()`` (polled; timing is never asserted)."""
    async with asyncio.timeout(timeout):
        while not await _holds(condition):
            await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], Any]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


@contextlib.asynccontextmanager
async def running(tmp_path: Path, plugin: PluginCa | None = None) -> AsyncIterator[ControlPlane]:
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "config" / "mesh.yaml").write_text(MESH)
    plane = ControlPlane(
        [tmp_path / "config"], tmp_path / "state", "127.0.0.1", 0, 0, 0, plugin_ca=plugin
    )
    await plane.start()
    try:
        yield plane
    finally:
        await plane.stop(0)


class Api:
    """The control plane's HTTP API as the admin calls it."""

    def __init__(self, plane: ControlPlane) -> None:
        token = (plane.state_dir / "admin-token").read_text().strip()
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{plane.http_port}",
            headers={"authorization": f"Bearer {token}"},
            timeout=30,
        )

    async def status(self) -> dict[str, Any]:
        answer = await self.client.get("/api/v1/ca")
        assert answer.status_code == 200, answer.text
        data: dict[str, Any] = answer.json()
        return data

    async def step(self, step: str, expect: int = 200, **body: Any) -> dict[str, Any]:
        answer = await self.client.post(f"/api/v1/ca/{step}", json=body)
        assert answer.status_code == expect, answer.text
        data: dict[str, Any] = answer.json()
        return data


def records(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["replica"]: item for item in status["workloads"]}


def test_rotation_reaches_every_workload_over_ads_and_refuses_unsafe_steps(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        workloads: list[Workload] = []
        async with running(tmp_path) as plane:
            api = Api(plane)
            a, b = workload(plane, "a"), workload(plane, "b")
            # c is connected but its keeper does not run: it is in use, and holds up each
            # step until the test has it renew.
            c = workload(plane, "c", certificates=False)
            workloads += (a, b, c)
            try:
                await run(plane, api, a, b, c)
            finally:
                await api.client.aclose()
        # The control plane closed their streams (TLS ends at once; a client's own close would
        # wait for the server's close_notify).
        for item in workloads:
            await item.stop()

    asyncio.run(main())


async def run(plane: ControlPlane, api: Api, a: Workload, b: Workload, c: Workload) -> None:
    async def holders() -> set[str]:
        return set(records(await api.status()))

    await until(lambda: a.keeper.current is not None and b.keeper.current is not None)
    await until(lambda: _eq(holders(), {"a-0.default", "b-0.default", "c-0.default"}))
    status = await api.status()
    old = status["active"]
    assert (status["phase"], status["staged"], status["next"]["step"]) == ("idle", None, "stage")
    assert [root["role"] for root in status["roots"]] == ["active"]
    assert records(status)["c-0.default"]["issued"] == "none yet"

    # Steps out of order are refused, with the reason.
    refused = await api.step("activate", 409)
    assert refused["error"] == "activate refused: no root is staged: stage a new root first"
    refused = await api.step("retire", 409)
    assert (
        refused["error"] == f"retire refused: nothing to retire: root {old} is the only one trusted"
    )
    # Only the admin may look or act.
    async with httpx.AsyncClient() as stranger:
        anonymous = await stranger.get(f"http://127.0.0.1:{plane.http_port}/api/v1/ca")
    assert anonymous.status_code == 401
    token = read_token_file(BootstrapTokens(plane.state_dir).issue("default", "a", "a-1.default"))
    answer = await api.client.post("/api/v1/ca/stage", headers={"authorization": f"Bearer {token}"})
    assert answer.status_code == 403, answer.text

    # Stage: the new root joins every bundle; a and b renew at once (their certificates live an
    # hour: only the push makes them renew), and root-cert.pem holds both roots.
    serials = [w.keeper.current.serial for w in (a, b) if w.keeper.current]
    status = await api.step("stage")
    new = status["staged"]
    assert new != old
    assert status["phase"] == "staged"
    assert {root["name"]: root["role"] for root in status["roots"]} == {
        old: "active",
        new: "staged",
    }
    published = load_certificates((plane.state_dir / "root-cert.pem").read_bytes(), "bundle")
    assert {root_name(root) for root in published} == {old, new}
    refused = await api.step("stage", 409)
    assert refused["error"] == f"stage refused: root {new} is staged already: activate it next"

    def trust(replica: str, root: str) -> Callable[[], Any]:
        async def check() -> bool:
            return root in records(await api.status())[replica].get("trusts", [])

        return check

    await until(trust("a-0.default", new))
    await until(trust("b-0.default", new))
    for w, serial in zip((a, b), serials, strict=True):
        # The CA records the issue before its answer reaches the workload: wait for the answer.
        await until(functools.partial(renewed_since, w, serial))
        assert w.keeper.renewals >= 1
    refused = await api.step("activate", 409)
    assert refused["error"].startswith(
        f"activate refused: not every workload trusts the staged root {new} yet"
    )
    assert refused["waitingFor"] == ["c-0.default: no certificate from this control plane yet"]

    # c gets its certificate (and so the bundle with the new root): activate. a and b renew at
    # once with leaves of the new root, through the CA whose serving certificate is now signed
    # by it too (their xDS trust followed the bundle).
    await c.keeper.renew_once()
    status = await api.step("activate")
    assert (status["phase"], status["active"], status["next"]["step"]) == (
        "activated",
        new,
        "retire",
    )
    refused = await api.step("stage", 409)
    assert (
        refused["error"]
        == f"stage refused: the previous rotation is not finished: retire root {old} first"
    )
    for replica in ("a-0.default", "b-0.default"):
        await until(functools.partial(_signed_by, api, replica, new))
    # c does not renew by itself here (its keeper does not run): its leaf of the old root is
    # valid and in use, so retire must wait for it.
    c_leaf = records(await api.status())["c-0.default"]
    refused = await api.step("retire", 409)
    assert refused["error"].startswith(
        "retire refused: leaves signed by an old root are still valid and in use"
    )
    assert refused["waitingFor"] == [
        f"c-0.default: its certificate (serial {c_leaf['serial']}, valid until "
        f"{c_leaf['notAfter']}) is signed by root {old}, not the active {new}"
    ]
    await c.keeper.renew_once()  # verifies the CA's new certificate with the bundle it got

    # Retire: the old root is gone from the bundle, the file and the disk; a and b renew again
    # and hold only the new root; a new ADS stream verifies the control plane with it.
    status = await api.step("retire")
    assert (status["phase"], [r["name"] for r in status["roots"]]) == ("idle", [new])
    assert not status["settled"]  # nobody has the new bundle yet
    await c.keeper.renew_once()
    published = load_certificates((plane.state_dir / "root-cert.pem").read_bytes(), "bundle")
    assert [root_name(root) for root in published] == [new]
    assert sorted(p.name for p in (plane.state_dir / "ca" / "roots").iterdir()) == [new]
    await until(lambda: _settled(api))
    for w in (a, b, c):
        # The CA records each re-issue before its answer reaches the workload's keeper.
        await until(functools.partial(_holds_only, w, new))
        current = w.keeper.current
        assert current is not None
        (root,) = load_certificates(current.bundle_pem, "bundle")
        assert root_name(root) == new
        leaf = load_certificates(current.chain_pem, "chain")[-1]
        assert issued_by(leaf, root)
    await a.stop()
    a.xds.connected = False
    a.reconnect()
    await until(lambda: a.xds.connected)

    # proxy-status counts the bundle among what a node must have ACKed to be current.
    async def secrets_current() -> bool:
        answer = await api.client.get("/api/v1/proxy-status")
        nodes = answer.json()["nodes"]
        return len(nodes) >= 3 and all(n["types"]["secrets"]["current"] for n in nodes)

    await until(secrets_current)


async def _eq(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _signed_by(api: Api, replica: str, root: str) -> bool:
    return bool(records(await api.status())[replica].get("root") == root)


def _holds_only(workload: Workload, root: str) -> bool:
    """Whether ``workload``'s keeper holds a certificate whose bundle is ``root`` alone."""
    current = workload.keeper.current
    if current is None:
        return False
    return [root_name(r) for r in load_certificates(current.bundle_pem, "bundle")] == [root]


async def _settled(api: Api) -> bool:
    return bool((await api.status())["settled"])


def test_a_plug_in_ca_is_not_rotated_by_tulle(tmp_path: Path) -> None:
    (tmp_path / "plugin").mkdir()
    cert, key, chain, root = write_user_ca(tmp_path / "plugin")

    async def main() -> None:
        async with running(tmp_path, PluginCa(cert, key, chain)) as plane:
            api = Api(plane)
            try:
                status = await api.status()
                assert (status["ca"], status["phase"]) == ("plug-in", "plug-in")
                assert status["active"] == root_name(root)
                assert status["next"] == {
                    "step": None, "ready": False, "waitingFor": [PLUGIN_REFUSAL]
                }  # fmt: skip
                for step in ("stage", "activate", "retire"):
                    refused = await api.step(step, 409)
                    assert refused["error"] == f"{step} refused: {PLUGIN_REFUSAL}"
                refused = await api.step("rollback", 404)
                assert (
                    refused["error"]
                    == "no CA step 'rollback'; steps: stage, activate, retire (POST)"
                )
            finally:
                await api.client.aclose()

    asyncio.run(main())


def test_a_restarted_control_plane_remembers_who_holds_what(tmp_path: Path) -> None:
    # The CA's records are kept in the state directory: after a restart the workloads (which
    # keep their hour-long certificates and reconnect) are known at once, so a rotation need
    # not wait for their next renewal.
    async def main() -> None:
        workloads: list[Workload] = []
        async with running(tmp_path) as plane:
            port = plane.secure_xds_port
            workloads += (workload(plane, "a"), workload(plane, "b"))
            await until(lambda: all(w.keeper.current for w in workloads))
        saved = (plane.state_dir / "issued-certificates.json").stat()
        assert saved.st_mode & 0o777 == 0o600
        serials = {f"{w.xds.node_id.split('~')[2]}": w.keeper.current for w in workloads}
        restarted = ControlPlane([tmp_path / "config"], tmp_path / "state", "127.0.0.1", 0, 0, port)
        await restarted.start()
        api = Api(restarted)
        try:
            await until(lambda: _eq(_holders(api), {"a-0.default", "b-0.default"}))
            status = await api.status()
            for item in status["workloads"]:
                current = serials[item["replica"]]
                assert current is not None
                assert item["serial"] == f"{current.serial:x}"  # no renewal: the saved record
            assert status["settled"] is True
        finally:
            await api.client.aclose()
            await restarted.stop(0)
            for item in workloads:
                await item.stop()

    asyncio.run(main())


async def _holders(api: Api) -> set[str]:
    return set(records(await api.status()))
