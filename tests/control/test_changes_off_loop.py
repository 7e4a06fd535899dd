"""A change being validated (seconds of CPU for a large config) does not hold up the event loop:
the API and xDS go on answering, and too many applies at once are refused with 429."""

from __future__ import annotations

import asyncio
import threading

import httpx
import pytest

from tulle.control.api import MAX_WAITING_APPLIES
from tulle.control.app import ControlPlane
from tulle.control.config import ChangeResult
from tulle.security.tokens import admin_token

pytestmark = pytest.mark.timeout(120)


def test_the_api_answers_while_a_change_is_being_validated(tmp_path):
    entered, release = threading.Event(), threading.Event()

    def slow_apply(text: str, filename: str) -> ChangeResult:  # runs in the changes thread
        entered.set()
        assert release.wait(60)
        return ChangeResult(True, ())

    async def main() -> tuple[int, str, int]:
        plane = ControlPlane([], tmp_path, "127.0.0.1", 0, 0, 0)
        await plane.start()
        plane.config.apply = slow_apply  # type: ignore[method-assign]
        api = f"http://127.0.0.1:{plane.http_port}"
        auth = {"authorization": f"Bearer {admin_token(tmp_path)}"}
        async with httpx.AsyncClient(base_url=api, timeout=60, headers=auth) as client:
            applying = asyncio.create_task(client.post("/api/v1/resources", content=b"a: 1"))
            assert await asyncio.to_thread(entered.wait, 60)
            health = await client.get("/healthz")  # answered while the apply is still running
            still_applying = not applying.done()
            release.set()
            applied = await applying
        await plane.stop(0)
        assert still_applying
        return health.status_code, health.text, applied.status_code

    assert asyncio.run(main()) == (200, "ok\n", 200)


def test_too_many_applies_at_once_are_refused_with_429(tmp_path):
    release = threading.Event()

    def slow_apply(text: str, filename: str) -> ChangeResult:
        assert release.wait(60)
        return ChangeResult(True, ())

    async def main() -> tuple[list[int], dict[str, str], int]:
        plane = ControlPlane([], tmp_path, "127.0.0.1", 0, 0, 0)
        await plane.start()
        plane.config.apply = slow_apply  # type: ignore[method-assign]
        limits = httpx.Limits(max_connections=MAX_WAITING_APPLIES + 1)
        api = f"http://127.0.0.1:{plane.http_port}"
        auth = {"authorization": f"Bearer {admin_token(tmp_path)}"}
        async with httpx.AsyncClient(
            base_url=api, timeout=60, limits=limits, headers=auth
        ) as client:
            waiting = [
                asyncio.create_task(client.post("/api/v1/resources", content=b"a: 1"))
                for _ in range(MAX_WAITING_APPLIES)
            ]
            while plane.applies_in_flight < MAX_WAITING_APPLIES:
                await asyncio.sleep(0.01)  # polls a state; the applies above must all be in
            refused = await client.post("/api/v1/resources", content=b"a: 1")
            release.set()
            statuses = [response.status_code for response in await asyncio.gather(*waiting)]
            again = await client.post("/api/v1/resources", content=b"a: 1")
        await plane.stop(0)
        return statuses, refused.json() | {"status": str(refused.status_code)}, again.status_code

    statuses, refused, again = asyncio.run(main())
    assert statuses == [200] * MAX_WAITING_APPLIES
    assert refused == {
        "status": "429",
        "error": f"{MAX_WAITING_APPLIES} applies are being validated already; retry shortly",
    }
    assert again == 200
