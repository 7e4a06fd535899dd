"""Shared test helpers, and how ``make test`` spreads the suite over pytest-xdist's workers.

``make test`` runs ``pytest -n N``; pyproject.toml adds ``--dist loadgroup
--no-loadscope-reorder``, under which a test is a unit of work of its own (any worker may run
it) unless it is marked ``xdist_group(NAME)``: the tests of one group run on one worker, one
after another. Two kinds of group:

- ``HOST_NETWORK``, marked in the test modules: every test that makes network namespaces,
  veths, bridges or iptables rules on the host (they share the bridge address 198.18.0.1 and
  port 15012 on it, and assert that no ``tulle-*`` namespace is left), which must never run
  beside another.
- Set here, on each worker: a test that uses a module-, class- or package-scoped fixture (a
  mesh, a sidecar, a control plane started once for many tests) is in the group of its module
  (or its package), so that the fixture starts once, as in a plain run, and not once on each
  worker that got one of its tests. Session-scoped fixtures start once per worker.

Workers take the slowest units first (``SLOW_FIRST``), so that none is left with a long one at
the end while the others are idle. Without ``-n`` none of this applies: the suite runs in file
order in one process."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "api" / "corpus"

HOST_NETWORK = "host-network"
"""The xdist group of tests that change the host's network (namespaces, links, iptables)."""

SLOW_FIRST = (
    HOST_NETWORK,
    "tests/local/test_rotation.py",
    "tests/local/test_shop.py",
    "tests/local/test_bookinfo.py",
    "tests/dashboard/test_dashboard_shop.py",
    "tests/e2e/proxyless_mtls",
    "tests/scenarios/test_parity_identity.py",
    "tests/local/test_demo.py",
    "tests/api/test_roundtrip.py",
    "tests/kube/test_leader.py",
    "tests/local/test_control_plane_restart.py",
    "tests/e2e/test_demo.py",
    "tests/local/test_lifecycle.py",
    "tests/e2e/test_grpc_xds.py",
    "tests/client",
    "tests/e2e/test_sidecar_grpc.py",
)
"""Groups and modules (or packages) whose tests take longest, longest first: workers start with
them. Tests of none follow, in file order; naming one that no longer exists changes nothing but
the order."""

SHARED_SCOPES = {"class": "module", "module": "module", "package": "package"}
"""The scopes of fixtures that tie a test to the others of its module or package."""


@pytest.fixture
def corpus() -> Path:
    """The directory of config corpora (valid/ and broken/)."""
    return CORPUS


def shared_unit(item: pytest.Item) -> str | None:
    """The module (``tests/x/test_y.py``) or package (``tests/x``) whose fixture ``item`` shares
    with other tests (the package when it uses one of each), or None."""
    info = getattr(item, "_fixtureinfo", None)  # test functions have one, other items not
    if info is None:
        return None
    scopes = {
        SHARED_SCOPES[definition.scope]
        for definitions in info.name2fixturedefs.values()
        for definition in definitions
        if definition.scope in SHARED_SCOPES
    }
    module = item.nodeid.split("::", 1)[0]
    if "package" in scopes:
        return module.rsplit("/", 1)[0]
    return module if scopes else None


@pytest.hookimpl(tryfirst=True)  # before xdist's own, which reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On an xdist worker: each test that shares a fixture of wider scope is put in its module's
    or package's group, and the tests of ``SLOW_FIRST`` come first (a stable sort: among the
    rest, file order stays). Every worker does the same, as xdist needs."""
    if not hasattr(config, "workerinput"):
        return
    rank: dict[pytest.Item, int] = {}
    for item in items:
        groups = [str(mark.args[0]) for mark in item.iter_markers("xdist_group") if mark.args]
        if not groups:
            unit = shared_unit(item)
            if unit is not None:
                item.add_marker(pytest.mark.xdist_group(unit))
                groups = [unit]
        module = item.nodeid.split("::", 1)[0]
        places = [*groups, module, *map(str, Path(module).parents)]
        rank[item] = min(
            (SLOW_FIRST.index(place) for place in places if place in SLOW_FIRST),
            default=len(SLOW_FIRST),
        )
    items.sort(key=rank.__getitem__)


@pytest.hookimpl(tryfirst=True)  # before xdist's own sends the ids to the controller
def pytest_collection_finish(session: pytest.Session) -> None:
    """On a worker under ``--dist loadgroup``, stop the run if a test of an ``xdist_group`` did
    not get the group in its id: xdist would spread the group over the workers, and tests that
    must never run side by side would (pytest-xdist#1386, with pytest 9.2)."""
    if not getattr(session.config.option, "loadgroup", False):
        return
    lost = [item.nodeid for item in session.items
            if any(item.iter_markers("xdist_group")) and "@" not in item.nodeid]  # fmt: skip
    if lost:
        raise pytest.UsageError(f"xdist_group not in effect (pytest-xdist#1386?): {lost[0]}")
