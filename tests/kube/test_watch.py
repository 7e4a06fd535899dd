"""tulle.kube.watch and client against KMock: list then watch, resume, 410, back-off, and one
update per burst."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from lightkube.resources.core_v1 import ConfigMap

from tests.kube.kmock_server import KubeApi
from tulle.kube.client import GoneError, Kind, KubeClient, KubeConfigError, load_config
from tulle.kube.watch import Backoff, Coalescer, Watcher

CONFIG_MAPS = Kind("ConfigMap", ConfigMap, True)
NS = "kube-watch"
FAST = Backoff(first=0.05, cap=0.2)


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """Wait for ``condition`` (a state, not a delay)."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + timeout
    while not condition():
        assert loop.time() < ends, "condition not met in time"
        await asyncio.sleep(0.02)


def names(watcher: Watcher) -> set[str]:
    return {name for namespace, name in watcher.objects if namespace == NS}


async def on_server(kube: KubeApi, action: Callable[[], Any]) -> Any:
    """Run ``action`` on KMock's loop (its state is not thread-safe)."""

    async def act() -> Any:
        return action()

    return await asyncio.to_thread(kube.call, act)


def lists_of(kube: KubeApi) -> int:
    requests = kube.emulator.list_requests
    return sum(
        1 for r in list(requests) if r.resource is not None and r.resource.plural == "configmaps"
    )


def run(kube: KubeApi, test: Callable[[Watcher, httpx.AsyncClient], Awaitable[None]]) -> None:
    """Run ``test`` with a watcher of ConfigMaps (running) and an HTTP client for writes."""

    async def main() -> None:
        client = KubeClient(load_config(kube.kubeconfig, None))
        watcher = Watcher(CONFIG_MAPS, client, lambda: None, FAST)
        task = asyncio.create_task(watcher.run())
        try:
            async with httpx.AsyncClient(base_url=kube.url, timeout=10) as http:
                await test(watcher, http)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()

    asyncio.run(main())


async def put(http: httpx.AsyncClient, name: str, value: str) -> None:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "data": {"v": value}}
    body["metadata"] = {"name": name, "namespace": NS}
    response = await http.post(f"/api/v1/namespaces/{NS}/configmaps", json=body)
    if response.status_code == 409:
        response = await http.patch(
            f"/api/v1/namespaces/{NS}/configmaps/{name}",
            json={"data": {"v": value}},
            headers={"content-type": "application/merge-patch+json"},
        )
    assert response.status_code in (200, 201), response.text


async def delete(http: httpx.AsyncClient, name: str) -> None:
    response = await http.delete(f"/api/v1/namespaces/{NS}/configmaps/{name}")
    assert response.status_code == 200, response.text


def test_list_then_watch_then_resume_after_a_cut_without_listing(kube_api: KubeApi) -> None:
    async def test(watcher: Watcher, http: httpx.AsyncClient) -> None:
        await put(http, "one", "1")
        await until(lambda: "one" in names(watcher))
        lists = lists_of(kube_api)
        await put(http, "two", "2")
        await until(lambda: "two" in names(watcher))
        await on_server(kube_api, kube_api.emulator.cut_watches)
        await put(http, "one", "1b")  # while the watch is cut or resuming: not lost
        await delete(http, "two")
        await until(lambda: names(watcher) == {"one"})
        assert watcher.objects[(NS, "one")]["data"] == {"v": "1b"}
        assert lists_of(kube_api) == lists
        assert watcher.stats.gone == 0
        assert watcher.stats.resumes >= 1
        await delete(http, "one")
        await until(lambda: names(watcher) == set())

    run(kube_api, test)


def test_410_lists_again_and_drops_what_was_deleted_meanwhile(kube_api: KubeApi) -> None:
    async def test(watcher: Watcher, http: httpx.AsyncClient) -> None:
        await put(http, "keep", "1")
        await put(http, "drop", "1")
        await until(lambda: names(watcher) == {"keep", "drop"})
        lists = lists_of(kube_api)

        def restart() -> None:  # refused watches, cut ones: the watcher backs off meanwhile
            kube_api.emulator.refuse_watches = True
            kube_api.emulator.cut_watches()

        await on_server(kube_api, restart)
        try:
            await delete(http, "drop")  # its DELETED event is compacted away
            await put(http, "new", "1")
            await on_server(kube_api, kube_api.emulator.compact)
            errors = watcher.stats.errors
            await until(lambda: watcher.stats.errors > errors)
        finally:
            await on_server(kube_api, lambda: setattr(kube_api.emulator, "refuse_watches", False))
        await until(lambda: watcher.stats.gone >= 1)
        await until(lambda: names(watcher) == {"keep", "new"})
        assert lists_of(kube_api) > lists
        for name in ("keep", "new"):
            await delete(http, name)

    run(kube_api, test)


def test_errors_back_off_and_the_watcher_recovers(kube_api: KubeApi) -> None:
    async def test(watcher: Watcher, http: httpx.AsyncClient) -> None:
        await until(watcher.synced.is_set)
        await on_server(kube_api, lambda: setattr(kube_api.emulator, "refuse_watches", True))
        try:
            await on_server(kube_api, kube_api.emulator.cut_watches)
            await until(lambda: watcher.stats.errors >= 3)
            assert "503" in watcher.stats.last_error
        finally:
            await on_server(kube_api, lambda: setattr(kube_api.emulator, "refuse_watches", False))
        await put(http, "after", "1")
        await until(lambda: "after" in names(watcher))
        await delete(http, "after")

    run(kube_api, test)


def test_bookmarks_move_the_resource_version(kube_api: KubeApi) -> None:
    async def test(watcher: Watcher, http: httpx.AsyncClient) -> None:
        await until(watcher.synced.is_set)
        await put(http, "elsewhere-marker", "1")  # a write the server's revision moves with
        await until(lambda: watcher.stats.bookmarks >= 1)
        assert int(watcher.resource_version) >= kube_api.emulator.revision - 1
        await delete(http, "elsewhere-marker")

    run(kube_api, test)


def test_an_unreachable_api_server_is_retried_and_never_counts_as_listed(tmp_path: Path) -> None:
    from tests.e2e.conftest import free_port
    from tests.kube.kmock_server import write_kubeconfig

    write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{free_port()}", "nowhere")

    async def main() -> None:
        config = load_config(tmp_path / "kubeconfig", "nowhere")
        client = KubeClient(config)
        watcher = Watcher(CONFIG_MAPS, client, lambda: None, FAST)
        task = asyncio.create_task(watcher.run())
        try:
            await until(lambda: watcher.stats.errors >= 3)
            assert "ConnectError" in watcher.stats.last_error
            assert not watcher.synced.is_set()
            assert watcher.stats.lists == 0
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await client.close()

    asyncio.run(main())


def test_backoff_is_exponential_capped_and_jittered() -> None:
    backoff = Backoff(first=0.2, cap=5.0, jitter=0.5)
    for attempt in range(1, 40):
        nominal = min(5.0, 0.2 * 2 ** (attempt - 1))
        delay = backoff.delay(attempt)
        assert nominal * 0.5 <= delay <= nominal
    assert len({backoff.delay(3) for _ in range(20)}) > 1  # jittered: not all the same


def test_a_burst_makes_one_flush() -> None:
    async def main() -> None:
        flushed: list[float] = []
        coalescer = Coalescer(lambda: flushed.append(0), quiet=0.1, longest=1.0)
        task = asyncio.create_task(coalescer.run())
        for _ in range(100):
            coalescer.poke()
        await until(lambda: len(flushed) == 1)
        coalescer.poke()
        await until(lambda: len(flushed) == 2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert coalescer.flushes == 2

    asyncio.run(main())


def test_a_stream_of_changes_still_flushes_every_longest_seconds() -> None:
    async def main() -> None:
        flushed: list[int] = []
        coalescer = Coalescer(lambda: flushed.append(0), quiet=0.5, longest=0.2)
        task = asyncio.create_task(coalescer.run())
        loop = asyncio.get_running_loop()
        ends = loop.time() + 1.5
        while loop.time() < ends:  # never quiet for 0.5 s
            coalescer.poke()
            await asyncio.sleep(0.02)
        assert len(flushed) >= 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())


def test_bad_connection_settings_say_which(tmp_path: Any) -> None:
    with pytest.raises(KubeConfigError, match=r"in-cluster .*token"):
        load_config(None, None)
    with pytest.raises(KubeConfigError, match=r"kubeconfig .*missing.*not found"):
        load_config(tmp_path / "missing", None)


class AlwaysGone:
    """A server that lists fine but answers every watch with 410 (a confused one)."""

    def __init__(self) -> None:
        self.lists = 0

    async def list(self, kind: Kind) -> tuple[str, list[dict[str, Any]]]:
        self.lists += 1
        return "7", []

    async def watch(self, kind: Kind, resource_version: str) -> Any:
        raise GoneError("too old resource version")
        yield {}  # an async generator


def test_410_after_410_backs_off_instead_of_listing_in_a_loop() -> None:
    async def main() -> None:
        source = AlwaysGone()
        watcher = Watcher(CONFIG_MAPS, source, lambda: None, Backoff(first=0.2, cap=0.2, jitter=0))
        task = asyncio.create_task(watcher.run())
        await asyncio.sleep(1.0)  # a window to count lists in, not a synchronisation
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # The first 410 lists at once, each further one waits 0.2 s: at most ~6 lists a second
        # (without the back-off: thousands).
        assert 2 <= source.lists <= 8
        assert watcher.stats.gone == source.lists or watcher.stats.gone == source.lists - 1

    asyncio.run(main())
