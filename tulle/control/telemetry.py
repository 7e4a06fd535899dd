"""The mesh's traffic as the dashboard shows it, gathered by the control plane itself in local
mode: every few seconds it reads each sidecar's ``/stats/prometheus`` and each library's
``/metrics`` (parsed by :mod:`tulle.obs.scrape`, as ``tulle top`` does) and keeps the readings
of the last ~15 minutes, from which it answers "what happened in the last N seconds" (a
:class:`Delta`) and "minute by minute, lately" (a list of them).

Where to read is a Prometheus ``file_sd_configs`` file (``--scrape-targets``): a JSON list of
``{"targets": ["host:port"], "labels": {"__metrics_path__": "/stats/prometheus",
"workload": "frontend"}}`` groups, which ``tulle up`` writes and keeps current as replicas start
and stop; a real Prometheus can scrape the local mesh from the same file. It is read again when
it changes.

With ``--prometheus URL`` (:mod:`tulle.control.prometheus`) the same questions are asked of a
Prometheus instead, in PromQL; both answer with :class:`Delta`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import httpx

from tulle.obs.scrape import ClusterFacts, Counts, EdgeKey, Reading, ReplicaKey, parse

log = logging.getLogger(__name__)
_K = TypeVar("_K")

SCRAPE_SECONDS = 2.0
"""How often the mesh's metrics are read."""

KEEP_SECONDS = 15 * 60
"""How far back readings are kept."""


@dataclass
class Delta:
    """What happened in a span of time: each edge's counts in it (increases), each caller's
    cluster figures at its end, and how long it was."""

    seconds: float
    edges: dict[EdgeKey, Counts] = field(default_factory=dict)
    clusters: dict[tuple[str, str], ClusterFacts] = field(default_factory=dict)
    at: float = 0.0  # its end (POSIX seconds)
    replicas: dict[ReplicaKey, Counts] = field(default_factory=dict)  # what each one served
    names: dict[str, str] = field(default_factory=dict)  # an endpoint's address → its replica


class TrafficSource(Protocol):
    """Where the dashboard's traffic figures come from (local scrapes, or a Prometheus)."""

    @property
    def description(self) -> str: ...

    async def delta(self, seconds: float) -> Delta:
        """The last ``seconds``."""
        ...

    async def series(self, minutes: float, step: float) -> list[Delta]:
        """The last ``minutes`` in slices of ``step`` seconds, oldest first."""
        ...


@dataclass(frozen=True)
class Target:
    """One metrics page to read, and the workload it belongs to."""

    url: str
    workload: str
    replica: str = ""
    address: str = ""  # the endpoint callers reach the replica at


def read_targets(path: Path) -> list[Target]:
    """The targets of a ``file_sd_configs`` JSON file; raises ValueError naming the file and
    the group that is not one."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of target groups")
    found = []
    for index, group in enumerate(data):
        if not isinstance(group, dict) or not isinstance(group.get("targets"), list):
            raise ValueError(f"{path}: group {index}: expected an object with a 'targets' list")
        labels = group.get("labels") or {}
        metrics_path = labels.get("__metrics_path__", "/metrics")
        scheme = labels.get("__scheme__", "http")
        for address in group["targets"]:
            url = f"{scheme}://{address}{metrics_path}"
            workload, replica = str(labels.get("workload", "")), str(labels.get("replica", ""))
            found.append(Target(url, workload, replica, str(labels.get("address", ""))))
    return found


def difference(before: Reading | None, after: Reading, seconds: float, at: float) -> Delta:
    """``after`` less ``before`` per edge (a counter that went down counts from zero, as a
    restarted process's does in Prometheus' ``increase``)."""
    edges = _less(after.edges, before.edges if before is not None else {})
    replicas = _less(after.replicas, before.replicas if before is not None else {})
    return Delta(seconds, edges, dict(after.clusters), at, replicas, dict(after.names))


def _less(after: dict[_K, Counts], before: dict[_K, Counts]) -> dict[_K, Counts]:
    """Each key's counts in ``after`` less those in ``before``; keys with no new request are
    left out."""
    found = {}
    for key, now in after.items():
        then = before.get(key)
        if then is None or then.requests > now.requests:
            then = Counts()
        counts = Counts(
            now.requests - then.requests,
            max(0.0, now.failures - then.failures),
            max(0.0, now.mtls - then.mtls),
        )
        for bound, count in now.buckets.items():
            counts.buckets[bound] = max(0.0, count - then.buckets.get(bound, 0.0))
        if counts.requests > 0:
            found[key] = counts
    return found


class LocalTraffic:
    """Reads the mesh's metrics pages every :data:`SCRAPE_SECONDS` and keeps the readings of
    the last :data:`KEEP_SECONDS`."""

    def __init__(self, targets_file: Path, interval: float = SCRAPE_SECONDS) -> None:
        self.targets_file = targets_file
        self.interval = interval
        self.history: collections.deque[tuple[float, float, Reading]] = collections.deque(
            maxlen=int(KEEP_SECONDS / interval) + 1
        )  # (monotonic, POSIX time, reading)
        self._targets: list[Target] = []
        self._stamp: tuple[int, int] | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    @property
    def description(self) -> str:
        return f"the mesh's own metrics, read every {self.interval:g} s ({self.targets_file})"

    def start(self) -> None:
        """Start reading in the background."""
        self._client = httpx.AsyncClient(timeout=self.interval)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Stop reading."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    def targets(self) -> list[Target]:
        """The targets file's targets, read again when it changed (a bad file keeps the last
        good targets, and says why in the log)."""
        try:
            info = self.targets_file.stat()
        except FileNotFoundError:
            return self._targets
        stamp = (info.st_mtime_ns, info.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._targets = read_targets(self.targets_file)
            except (ValueError, OSError) as error:
                log.warning("scrape targets not read: %s", error)
        return self._targets

    async def _run(self) -> None:
        while True:
            began = time.monotonic()
            try:
                await self.scrape_once()
            except Exception:  # a bad page must not end the dashboard's data
                log.exception("reading the mesh's metrics failed")
            await asyncio.sleep(max(0.1, self.interval - (time.monotonic() - began)))

    async def scrape_once(self) -> Reading:
        """Read every target once and keep the reading."""
        assert self._client is not None
        targets = self.targets()
        pages = await asyncio.gather(*(self._fetch(t) for t in targets))
        reading = await asyncio.to_thread(_parse_all, targets, pages)
        self.history.append((time.monotonic(), time.time(), reading))
        return reading

    async def _fetch(self, target: Target) -> str | None:
        assert self._client is not None
        try:
            response = await self._client.get(target.url)
        except httpx.HTTPError:
            return None  # restarting, or gone: left out of this reading
        return response.text if response.status_code == 200 else None

    async def delta(self, seconds: float) -> Delta:
        if not self.history:
            return Delta(seconds)
        now, at, latest = self.history[-1]
        # Past the readings kept (a control plane just started), the oldest one: a shorter span,
        # and the rates are over the span there is.
        before = self._at_or_before(now - seconds) or self.history[0]
        if before[0] >= now:
            return Delta(seconds, {}, dict(latest.clusters), at, {}, dict(latest.names))
        return difference(before[2], latest, now - before[0], at)

    async def series(self, minutes: float, step: float) -> list[Delta]:
        if not self.history:
            return []
        now = self.history[-1][0]
        result = []
        edge = now - minutes * 60
        while edge + step <= now + 1e-6:
            start, end = self._at_or_before(edge), self._at_or_before(edge + step)
            if start is not None and end is not None and end[0] > start[0]:
                result.append(difference(start[2], end[2], end[0] - start[0], end[1]))
            edge += step
        return result

    def _at_or_before(self, moment: float) -> tuple[float, float, Reading] | None:
        """The latest reading taken at or before ``moment`` (monotonic)."""
        found = None
        for entry in self.history:
            if entry[0] > moment + 1e-6:
                break
            found = entry
        return found


def _parse_all(targets: Sequence[Target], pages: Sequence[str | None]) -> Reading:
    reading = Reading()
    for target, page in zip(targets, pages, strict=True):
        if target.address and target.replica:
            reading.names[target.address] = target.replica
        if page is None:
            reading.failed.append(target.url)
            continue
        try:
            parse(page, target.workload, reading, target.replica)
        except ValueError as error:
            reading.failed.append(target.url)
            log.warning("metrics of %s not read: %s", target.url, error)
    return reading
