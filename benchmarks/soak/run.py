"""One soak run, start to end: the shop up with ``tulle up -d`` (as ``make demo`` starts it), the
load in a process of its own, and meanwhile the config churn, the disruptions on their schedule
and a sample of every process's memory and open files every few seconds; then ``tulle down``,
a check that no process is left, and the table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.soak import load
from benchmarks.soak.churn import ChurnCounts, churn
from benchmarks.soak.config import REPO, write_config
from benchmarks.soak.disruptions import Disruptor, Window
from benchmarks.soak.processes import (
    LOADER,
    MACHINE,
    Usage,
    left_behind,
    machine_usage,
    snapshot,
    usage,
)
from benchmarks.soak.report import Soaked
from tulle.local.state import StateDir

TULLE = [sys.executable, "-m", "tulle"]
SAMPLE_EVERY = 2.0
TAIL = 15.0  # seconds at the end with no new disruption: the last one is over before the end


@dataclass
class Options:
    """How long, how hard, and what to do to the mesh."""

    seconds: float = 600.0
    rate: float = 50.0  # pages a second; see docs/soak.md for why not more
    every: float = 20.0  # a disruption every this many seconds, kinds in turn
    churn_period: float = 0.1  # 0: no churn
    kinds: tuple[str, ...] | None = None  # None: every kind (netem only with pods)
    pods: bool = False
    work: Path = field(default_factory=lambda: Path("/tmp/tulle-soak"))
    drain_targets: tuple[str, ...] = ("catalog-v1-0", "payment-0", "catalog-v2-0", "payment-1",
                                      "catalog-v1-1", "payment-2")  # fmt: skip
    sidecar_targets: tuple[str, ...] = ("payment-1", "auth-0", "catalog-v1-0")
    netem_targets: tuple[str, ...] = ("payment-0", "catalog-v1-1", "cart-0")
    netem: str = "delay 50ms 10ms loss 2%"

    @property
    def warmup(self) -> float:
        return min(15.0, self.seconds / 6)

    def disruptions(self) -> list[str]:
        """The kinds of disruption, in the order they take turns."""
        if self.kinds is not None:
            return list(self.kinds)
        return ["controlplane", "drain", "sidecar"] + (["netem"] if self.pods else [])

    def schedule(self) -> list[tuple[float, str, str]]:
        """``(seconds after the load began, kind, target)`` of every disruption."""
        kinds = self.disruptions()
        if not kinds:
            return []
        targets = {"controlplane": ("controlplane",), "drain": self.drain_targets,
                   "sidecar": self.sidecar_targets, "netem": self.netem_targets}  # fmt: skip
        turns: dict[str, int] = dict.fromkeys(kinds, 0)
        planned = []
        at, index = self.warmup + 5.0, 0
        # A short run still gets one of each kind.
        every = min(self.every, (self.seconds - TAIL - at) / len(kinds))
        while at < self.seconds - TAIL:
            kind = kinds[index % len(kinds)]
            choices = targets[kind]
            planned.append((at, kind, choices[turns[kind] % len(choices)]))
            turns[kind] += 1
            index += 1
            at += every
        return planned


def tulle(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TULLE, *args], cwd=REPO, check=False, text=True,
                          capture_output=True)  # fmt: skip


class Soak:
    """Runs the shop under load and disruption and gathers what happened."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.state = StateDir(options.work / "state")
        self.windows: list[Window] = []
        self.samples: dict[str, list[Usage]] = {}

    def start_mesh(self) -> None:
        options = self.options
        config = write_config(options.work / "config")
        args = ["up", "-d", "-f", str(config), "--state-dir", str(self.state.root),
                "--api-port", "0", "--xds-port", "0", "--grace", "10"]  # fmt: skip
        if options.pods:
            args.append("--pods")
        print(f"== tulle {' '.join(args)}", flush=True)
        started = tulle(*args)
        if started.returncode != 0:
            raise RuntimeError(f"tulle up failed:\n{started.stdout}{started.stderr}")
        print(started.stdout, flush=True)

    async def run(self) -> Soaked:
        options = self.options
        conditions = _conditions(options)
        outcomes_file = options.work / "outcomes.jsonl"
        began = time.monotonic() + 1.0
        loader = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.soak.load", "--state-dir", str(self.state.root),
            "--rate", str(options.rate), "--seconds", str(options.seconds),
            "--start", str(began), "--out", str(outcomes_file), cwd=REPO,
        )  # fmt: skip
        stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=5.0) as http:
            try:
                churning = asyncio.create_task(self._churn(http, began, stop))
                sampling = asyncio.create_task(self._sample(began, stop, loader.pid))
                disrupting = asyncio.create_task(self._disrupt(http, began, stop))
                await loader.wait()
                stop.set()
                await disrupting
                counts = await churning
                await sampling
            finally:
                stop.set()
                if loader.returncode is None:
                    loader.kill()
                    await loader.wait()
        if loader.returncode != 0:
            raise RuntimeError(f"the load generator failed (exit {loader.returncode})")
        conditions.append(f"load average at the end: {_load_average()}")
        return Soaked(conditions, began, load.read(outcomes_file), self.windows, counts,
                      self.samples, self.state.read())  # fmt: skip

    async def _churn(self, http: httpx.AsyncClient, began: float,
                     stop: asyncio.Event) -> ChurnCounts:  # fmt: skip
        await _sleep_until(began + self.options.warmup, stop)
        if not self.options.churn_period:
            return ChurnCounts()
        return await churn(self.state, http, self.options.churn_period, stop)

    async def _disrupt(self, http: httpx.AsyncClient, began: float, stop: asyncio.Event) -> None:
        disruptor = Disruptor(self.state, http, self.options.netem)
        for at, kind, target in self.options.schedule():
            await _sleep_until(began + at, stop)
            if stop.is_set():
                return
            window = await disruptor.run(kind, target)
            self.windows.append(window)
            print(f"  t={window.start - began:6.1f} s  {kind:<12} {target:<16} {window.note}",
                  flush=True)  # fmt: skip

    async def _sample(self, began: float, stop: asyncio.Event, loader: int) -> None:
        """Every process's usage (and the load generator's): first after the warm-up, then
        every few seconds (the last sample taken while the load still ran is the end's)."""
        await _sleep_until(began + self.options.warmup, stop)
        end = began + self.options.seconds - 1.0
        while not stop.is_set() and time.monotonic() < end:
            mesh = self.state.read()
            if mesh is not None:
                seen = snapshot(mesh)
                mine = usage(loader)
                if mine is not None:
                    seen[LOADER] = mine
                seen[MACHINE] = machine_usage()
                for name, used in seen.items():
                    self.samples.setdefault(name, []).append(used)
            await _sleep_until(min(end, time.monotonic() + SAMPLE_EVERY), stop)

    def stop_mesh(self) -> list[tuple[int, str]]:
        """``tulle down``; then whatever of the mesh is still alive (killed, and named)."""
        final = self.state.read()
        print("== tulle down", flush=True)
        down = tulle("down", "--state-dir", str(self.state.root))
        if down.returncode != 0:
            print(down.stdout + down.stderr, flush=True)
        runner = final.runner_pid if final else None
        deadline = time.monotonic() + 15
        left = left_behind(self.state.root, runner)
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = left_behind(self.state.root, runner)
        if left:
            tulle("down", "--force", "--state-dir", str(self.state.root))
            for pid, _ in left_behind(self.state.root, runner):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, 9)
        return left


async def _sleep_until(when: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, when - time.monotonic()))


def _load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _conditions(options: Options) -> list[str]:
    mode = "--pods (a network namespace per replica)" if options.pods else "loopback"
    kinds = "" if options.kinds is None else f" ({', '.join(options.kinds) or 'none'})"
    churning = (f"config change every {options.churn_period * 1000:g} ms"
                if options.churn_period else "no config churn")  # fmt: skip
    return [
        f"{options.rate:g} requests/s to the frontend for {options.seconds:g} s, open loop; "
        f"{mode}; a disruption every {options.every:g} s, in turn{kinds}; {churning}",
        f"{os.cpu_count()} cores ({platform.processor() or platform.machine()}), Python "
        f"{platform.python_version()}; load average at the start: {_load_average()}",
    ]
