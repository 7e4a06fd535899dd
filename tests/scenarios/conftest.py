"""The parity suite: each scenario runs once through a sidecar (``tulle proxy`` as the HTTP
proxy of an httpx client) and once through the library (``tulle.client`` in this process), on
the same control plane and backends, and must see the same outcome."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest

import tulle.client
from tests.e2e.conftest import (  # noqa: F401 - fixtures used by the scenarios
    ControlPlane,
    Processes,
    control_plane,
    no_process_left_behind,
    processes,
    synced,
    wait_until,
)

MODES = ["sidecar", "library"]
_pods = itertools.count()


@dataclass(frozen=True)
class Outcome:
    """What a caller saw: the status, which backend answered ("-" for the mesh), and the mesh's
    reason when the mesh answered itself (x-tulle-error / MeshError.reason)."""

    status: int
    backend: str
    reason: str = ""


class Caller(Protocol):
    """Sends requests through the mesh in one mode; safe to use from several threads."""

    node: str

    def get(self, url: str, headers: dict[str, str] | None = None) -> Outcome: ...

    def close(self) -> None: ...


class SidecarCaller:
    """An httpx client using a sidecar as its HTTP proxy (as HTTP_PROXY makes apps do)."""

    def __init__(self, plane: ControlPlane, procs: Processes) -> None:
        self.sidecar = procs.sidecar(plane, pod=f"caller-{next(_pods)}")
        self.node = self.sidecar.node
        self.client = self.sidecar.client()

    def get(self, url: str, headers: dict[str, str] | None = None) -> Outcome:
        response = self.client.get(url, headers=headers)
        return Outcome(
            response.status_code,
            response.headers.get("x-backend", "-"),
            response.headers.get("x-tulle-error", ""),
        )

    def close(self) -> None:
        self.client.close()


class LibraryCaller:
    """``tulle.client.Client`` in this process."""

    def __init__(self, plane: ControlPlane) -> None:
        self.node = f"library~127.0.0.1~caller-{next(_pods)}.default~default.svc.cluster.local"
        tulle.client.configure(
            xds_address=f"127.0.0.1:{plane.xds_port}", node_id=self.node, access_log=False
        )
        tulle.client.wait_ready(15)
        self.client = tulle.client.Client(timeout=30)

    def get(self, url: str, headers: dict[str, str] | None = None) -> Outcome:
        try:
            response = self.client.get(url, headers=headers)
        except tulle.client.MeshError as error:
            return Outcome(error.status, "-", error.reason)
        return Outcome(response.status_code, response.headers.get("x-backend", "-"))

    def close(self) -> None:
        self.client.close()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> Iterator[str]:
    yield request.param
    tulle.client.shutdown()


@pytest.fixture
def caller_for(mode: str, control_plane: ControlPlane, processes: Processes):  # noqa: F811
    """Makes the caller of this test's mode, synced with the control plane's current config;
    closes it after the test."""
    made: list[Caller] = []

    def make() -> Caller:
        caller: Caller
        if mode == "sidecar":
            caller = SidecarCaller(control_plane, processes)
        else:
            caller = LibraryCaller(control_plane)
        made.append(caller)
        wait_until(lambda: synced(control_plane, caller.node), timeout=15)
        return caller

    yield make
    for caller in made:
        caller.close()


def get_all(caller: Caller, url: str, count: int) -> list[Outcome]:
    return [caller.get(url) for _ in range(count)]
