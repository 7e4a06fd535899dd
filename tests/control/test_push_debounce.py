"""A burst of changes makes one push."""

from __future__ import annotations

import asyncio

from tulle.control.app import ControlPlane
from tulle.control.registry import endpoint_from_dict


def test_a_burst_of_changes_makes_one_push(tmp_path):
    async def main() -> tuple[int, int]:
        plane = ControlPlane([], tmp_path, "127.0.0.1", 0, 0, 0)
        await plane.start()
        pushes: list[int] = []
        pushed = asyncio.Event()
        original = plane.ads.push

        def counting_push() -> None:
            pushes.append(plane.snapshot.version)
            pushed.set()
            original()

        plane.ads.push = counting_push  # type: ignore[method-assign]
        burst = [  # 50 registrations at once: they are validated one after the other
            plane.register(endpoint_from_dict({"service": "a", "address": "127.0.0.1", "port": p}))
            for p in range(9000, 9050)
        ]
        await asyncio.gather(*burst)
        await asyncio.wait_for(pushed.wait(), 5)
        pushed.clear()
        await plane.register(
            endpoint_from_dict({"service": "a", "address": "127.0.0.1", "port": 9999})
        )
        await asyncio.wait_for(pushed.wait(), 5)
        endpoints = len(plane.snapshot.endpoints)
        await plane.stop(0)
        return len(pushes), endpoints

    pushes, endpoints = asyncio.run(main())
    assert pushes == 2  # one for the burst of 50, one for the later change
    assert endpoints == 51
