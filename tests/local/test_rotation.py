"""Certificate renewal and root rotation under load, under ``tulle up`` (issue 17, "Done when"):
certificates live 20 s; for 90 s, 200 requests a second go over keep-alive connections through
two mTLS paths into a STRICT backend — sidecar to sidecar (the test's client uses the caller
sidecar's HTTP proxy port, as the caller's app would) and library to sidecar (a ``tulle.client``
app) — while every workload renews at half life and, in the same run, ``tulle ca rotate`` stages
a new root, activates it and retires the old one. Not one request may fail (any non-2xx or
error counts). Renewals are counted from the CA's records (``GET /api/v1/ca``, polled): every
workload gets at least 5 certificates (4 renewals). At the end every workload's leaf chains to
the new root, bundles (the CA's records, ``root-cert.pem``, ``proxy-config --type secrets``)
hold only the new root, and the old root's key is gone from the disk."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.local.conftest import REPO, TULLE, Mesh, backend_workload, running_mesh, tulle, workload
from tulle.security.certificates import load_certificates
from tulle.security.rootstore import root_name

pytestmark = pytest.mark.timeout(400)

LIFETIME_SECONDS = 20
DURATION = 90.0  # seconds of load
RATE = 100.0  # requests a second on each path (200 in all)
ROTATE_AT = 20.0  # seconds into the load: after every workload has renewed at least once
CONNECTIONS = 8  # keep-alive connections of each load client

CONFIG = (
    f"""\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{workloadCertificateLifetime: {LIFETIME_SECONDS}s}}
---
"""
    + backend_workload("backend")
    + backend_workload("caller")
    + workload("libcaller", "[python3, tests/local/library_caller.py]", mesh="library")
    + """\
# Each upstream connection carries 100 requests, then the pool opens another: new mTLS
# handshakes all through the run (about two a second), with whatever certificate and bundle each
# side holds at that moment, beside connections that live across renewals and rotation steps.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: backend}
spec:
  host: backend
  trafficPolicy: {connectionPool: {http: {maxRequestsPerConnection: 100}}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: backend-strict}
spec:
  selector: {matchLabels: {app: backend}}
  mtls: {mode: STRICT}
"""
)

REPLICAS = ("backend-0.default", "caller-0.default", "libcaller-0.default")


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("rotation"), CONFIG) as mesh:
        yield mesh


def http_proxy_of(pid: int) -> str:
    """The HTTP proxy address ``tulle up`` gave an app (its sidecar's outbound listener)."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    values = dict(item.decode().split("=", 1) for item in environ if b"=" in item)
    return values["HTTP_PROXY"]


@dataclass
class Tally:
    """Requests sent on one path, and every failure with what it was."""

    sent: int = 0
    ok: int = 0
    failures: list[str] = field(default_factory=list)


async def one(client: httpx.AsyncClient, url: str, tally: Tally, started: float) -> None:
    tally.sent += 1
    try:
        response = await client.get(url)
    except httpx.HTTPError as error:
        tally.failures.append(f"t={time.monotonic() - started:.1f}s {url}: {error!r}")
        return
    if 200 <= response.status_code < 300:
        tally.ok += 1
    else:
        tally.failures.append(
            f"t={time.monotonic() - started:.1f}s {url}: {response.status_code} "
            f"{response.headers.get('x-tulle-error', '')} {response.text[:200]!r}"
        )


async def paced(client: httpx.AsyncClient, url: str, tally: Tally, started: float) -> None:
    """``RATE`` requests a second for ``DURATION`` seconds over ``CONNECTIONS`` keep-alive
    connections: each of as many workers takes the next request number and sends it at its
    time (a slow answer delays only its worker's next request; the others keep the pace)."""
    loop = asyncio.get_running_loop()
    begin = loop.time()
    numbers = iter(range(int(RATE * DURATION)))

    async def worker() -> None:
        for index in numbers:
            delay = begin + index / RATE - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
            await one(client, f"{url}/{index}", tally, started)

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))


async def watch_ca(
    api: httpx.AsyncClient, stop: asyncio.Event, serials: dict[str, set[str]], phases: list[str]
) -> None:
    """Poll the CA's status: every serial each workload was issued, every phase passed."""
    while not stop.is_set():
        answer = await api.get("/api/v1/ca")
        assert answer.status_code == 200, answer.text
        status = answer.json()
        if not phases or phases[-1] != status["phase"]:
            phases.append(status["phase"])
        for item in status["workloads"]:
            if "serial" in item:
                serials[item["replica"]].add(item["serial"])
        # Renewals are ≥ 9 s apart (45 % of 20 s), rotation renewals ≥ a step apart: a poll
        # every half second sees every certificate.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)


async def rotate(api_url: str, token: str) -> tuple[int, str]:
    """``tulle ca rotate`` as an operator runs it: stage, activate, retire, waiting between."""
    process = await asyncio.create_subprocess_exec(
        *TULLE, "ca", "rotate", "--server", api_url, "--token", token, "--timeout", "60",
        cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


def test_renewals_and_a_root_rotation_under_load_fail_no_request(mesh: Mesh) -> None:
    status = mesh.status()
    api_url = status["api"]
    replicas = {replica["replica"]: replica for replica in status["replicas"]}
    proxy = http_proxy_of(replicas["caller-0"]["app_pid"])
    library = f"http://{replicas['libcaller-0']['address']}"
    before = httpx.get(f"{api_url}/api/v1/ca", headers=mesh.auth, timeout=30).json()
    old = before["active"]
    assert before["phase"] == "idle"

    async def main() -> tuple[Tally, Tally, dict[str, set[str]], list[str], tuple[int, str], float]:
        limits = httpx.Limits(max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS)
        timeout = httpx.Timeout(30.0)
        sidecars, libraries = Tally(), Tally()
        serials: dict[str, set[str]] = collections.defaultdict(set)
        phases: list[str] = []
        stop = asyncio.Event()
        async with (
            httpx.AsyncClient(proxy=proxy, limits=limits, timeout=timeout) as via_sidecar,
            httpx.AsyncClient(limits=limits, timeout=timeout) as via_library,
            httpx.AsyncClient(base_url=api_url, headers=mesh.auth, timeout=30) as api,
        ):
            watcher = asyncio.create_task(watch_ca(api, stop, serials, phases))
            started = time.monotonic()
            load = asyncio.gather(  # both paths at once, ended after DURATION seconds
                paced(via_sidecar, "http://backend:8080/sidecar", sidecars, started),
                paced(via_library, f"{library}/call/library", libraries, started),
            )
            await asyncio.sleep(ROTATE_AT)  # pacing: the rotation starts well into the load
            rotated = await rotate(api_url, mesh.token)
            await load
            elapsed = time.monotonic() - started
            stop.set()
            await watcher
        return sidecars, libraries, serials, phases, rotated, elapsed

    sidecars, libraries, serials, phases, (code, said), elapsed = asyncio.run(main())

    total = int(RATE * DURATION)
    assert sidecars.failures == [], f"{len(sidecars.failures)} failed: {sidecars.failures[:20]}"
    assert libraries.failures == [], f"{len(libraries.failures)} failed: {libraries.failures[:20]}"
    assert (sidecars.sent, sidecars.ok) == (total, total)
    assert (libraries.sent, libraries.ok) == (total, total)
    assert code == 0, said
    assert "rotation done: every workload in use trusts only root" in said, said
    # Every step was taken while the load ran (the watcher's phases are only reported: a
    # phase may last less than one of its polls on a loaded machine).
    steps = [line.split(":")[0].split()[0] for line in said.splitlines()]
    assert steps == ["staged", "activated", "retired", "rotation"], said
    issued = {replica: len(serials[replica]) for replica in REPLICAS}
    assert all(count >= 5 for count in issued.values()), issued  # 4 renewals or more each

    after = httpx.get(f"{api_url}/api/v1/ca", headers=mesh.auth, timeout=30).json()
    new = after["active"]
    assert new != old
    assert [root["name"] for root in after["roots"]] == [new]
    assert after["settled"] is True
    records = {item["replica"]: item for item in after["workloads"]}
    assert set(records) == set(REPLICAS)
    for replica in REPLICAS:
        assert records[replica]["root"] == new, records[replica]
        assert records[replica]["trusts"] == [new], records[replica]
    control_plane = mesh.state_dir / "controlplane"
    published = load_certificates((control_plane / "root-cert.pem").read_bytes(), "bundle")
    assert [root_name(root) for root in published] == [new]
    assert sorted(p.name for p in (control_plane / "ca" / "roots").iterdir()) == [new]
    node = next(
        n["node"]
        for n in httpx.get(f"{api_url}/api/v1/proxy-status", headers=mesh.auth, timeout=30).json()[
            "nodes"
        ]
        if "~backend-0." in n["node"]
    )
    shown = tulle("proxy-config", node, "--type", "secrets", "-o", "json",
                  "--server", api_url, "--token", mesh.token)  # fmt: skip
    default, bundle = json.loads(shown.stdout)
    assert default["root"] == new
    assert len(bundle["roots"]) == 1
    table = tulle("ca", "status", "--server", api_url, "--token", mesh.token).stdout
    assert "phase idle" in table
    assert f"{new}  active" in table
    assert old not in table
    for replica in REPLICAS:
        assert replica in table
    print(f"{total * 2} requests in {elapsed:.1f}s, 0 failed; certificates issued: {issued}; "
          f"phases: {phases}", file=sys.stderr)  # fmt: skip
