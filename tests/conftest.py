"""Shared test helpers, and how ``make test`` spreads the suite over pytest-xdist's workers.

Under ``-n N --dist loadgroup`` (the Makefile) a unit of work is a whole module: its tests run
on one worker, in file order, so a module-scoped fixture (a mesh, a sidecar, a control plane) is
set up once, as in a plain run, not once per worker that got one of its tests. Tests marked
``xdist_group(NAME)`` form one unit across modules: ``HOST_NETWORK`` is every test that makes
network namespaces, veths or bridges on the host (they share the bridge address 198.18.0.1 and
assert that no ``tulle-*`` namespace is left), which must never run at the same time. Workers
take the slowest modules first (``SLOW_FIRST``), so that no worker is left with a long one at
the end while the others are idle. Without ``-n`` none of this applies: the suite runs in file
order in one process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "api" / "corpus"

HOST_NETWORK = "host-network"
"""The xdist group of tests that change the host's network (namespaces, links, iptables)."""

SLOW_FIRST = (
    HOST_NETWORK,
    "tests/local/test_rotation.py",
    "tests/local/test_shop.py",
    "tests/scenarios/test_parity_identity.py",
    "tests/e2e/test_demo.py",
    "tests/local/test_demo.py",
    "tests/kube/test_leader.py",
    "tests/e2e/test_grpc_xds.py",
)
"""Work units (modules, or an xdist group) that take longest, longest first: workers start
with them. A unit not named here follows, in file order; naming a unit that no longer exists
changes nothing but the order."""


@pytest.fixture
def corpus() -> Path:
    """The directory of config corpora (valid/ and broken/)."""
    return CORPUS


def work_unit(item: pytest.Item) -> str:
    """The xdist group ``item`` is marked with, else its module's path (``tests/...py``)."""
    for mark in item.iter_markers("xdist_group"):
        return str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
    return item.nodeid.split("::", 1)[0]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker, the tests of the ``SLOW_FIRST`` units first (a stable sort: within
    a unit, and among the rest, file order stays). Every worker sorts alike, as xdist needs."""
    if not hasattr(config, "workerinput"):
        return
    rank = {unit: index for index, unit in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(work_unit(item), len(SLOW_FIRST)))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's loadgroup scheduling with a module, not a single test, as the unit of an
    ungrouped test, taking units in the order the workers collected them (``SLOW_FIRST``)."""
    from xdist.scheduler import LoadGroupScheduling  # type: ignore[import-untyped]

    class ModuleScheduling(LoadGroupScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            if nodeid.rfind("@") > nodeid.rfind("]"):  # marked xdist_group: the group's name
                return str(super()._split_scope(nodeid))
            return nodeid.split("::", 1)[0]

    if config.getoption("dist") != "loadgroup":
        return None  # the scheduling asked for on the command line
    config.option.loadscopereorder = False  # keep the collected order: SLOW_FIRST first
    return ModuleScheduling(config, log)
