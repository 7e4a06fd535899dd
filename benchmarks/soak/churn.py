"""Config churn: the catalog VirtualService's split applied over the control plane's API every
``period`` seconds, alternating 90/10 and 80/20 between catalog v1 and v2, so every change is
a real one (a new route config pushed to every proxy). An apply that fails — the control plane
is down, or busy — is counted with its reason, and the next one comes at its time."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from dataclasses import dataclass, field

import httpx

from benchmarks.soak.config import catalog_split
from tulle.local.state import StateDir
from tulle.security.tokens import admin_token


@dataclass
class ChurnCounts:
    """What the churn did: applies accepted, failed by reason, and how long accepted ones took."""

    accepted: int = 0
    failed: collections.Counter[str] = field(default_factory=collections.Counter)
    seconds: list[float] = field(default_factory=list)  # of each accepted apply


async def churn(state: StateDir, http: httpx.AsyncClient, period: float,
                stop: asyncio.Event) -> ChurnCounts:  # fmt: skip
    """Apply a changed split every ``period`` seconds until ``stop`` is set."""
    counts = ChurnCounts()
    splits = [catalog_split(90).encode(), catalog_split(80).encode()]
    mesh = state.read()
    assert mesh is not None
    url = f"{mesh.api}/api/v1/resources"
    auth = {"authorization": f"Bearer {admin_token(state.control_plane)}"}
    due = time.monotonic()
    index = 0
    while not stop.is_set():
        began = time.monotonic()
        try:
            response = await http.post(url, content=splits[index % 2],
                                        headers={"x-tulle-filename": "soak-churn.yaml", **auth})  # fmt: skip
            if response.status_code == 200:
                counts.accepted += 1
                counts.seconds.append(time.monotonic() - began)
            else:
                counts.failed[f"HTTP {response.status_code}"] += 1
        except httpx.HTTPError as error:
            counts.failed[type(error).__name__] += 1
        index += 1
        due = max(due + period, time.monotonic())  # a late apply does not make the next early
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), due - time.monotonic())
    return counts
