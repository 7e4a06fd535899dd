"""The mesh's processes as the soak watches them: each one's name (``controlplane``,
``runner``, ``<replica>/app``, ``<replica>/sidecar``), pid, resident memory and open files, read
from ``/proc``; and the check, after the run, that none is left."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from tulle.local.state import MeshState

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICKS = os.sysconf("SC_CLK_TCK")
LOADER = "load generator"  # sampled beside the mesh's processes, for scale; not the mesh's
MACHINE = "machine"  # the whole machine: CPU busy (every process, others' work included)


@dataclass(frozen=True)
class Usage:
    """One process at one moment."""

    pid: int
    rss_mb: float
    files: int  # open file descriptors (sockets included)
    cpu: float  # seconds of CPU used so far (user and system)
    at: float  # when (monotonic)


def usage(pid: int) -> Usage | None:
    """``pid``'s RSS and open files, or None when it is gone."""
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
        files = len(os.listdir(f"/proc/{pid}/fd"))
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime
    except (OSError, IndexError, ValueError):
        return None
    return Usage(pid, pages * PAGE_KB / 1024, files, cpu, time.monotonic())


def machine_usage() -> Usage:
    """The machine as one Usage: CPU seconds busy on all cores, memory in use (MB)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle, iowait
    memory = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    used_kb = int(memory["MemTotal"].split()[0]) - int(memory["MemAvailable"].split()[0])
    return Usage(0, used_kb / 1024, 0, (sum(fields[:8]) - idle) / TICKS, time.monotonic())


def named_pids(mesh: MeshState) -> dict[str, int]:
    """Every process of the mesh by name, the runner and the control plane first."""
    pids = {"runner": mesh.runner_pid}
    if mesh.control_plane_pid:
        pids["controlplane"] = mesh.control_plane_pid
    for replica in mesh.replicas:
        if replica.app_pid:
            pids[f"{replica.replica}/app"] = replica.app_pid
        if replica.proxy_pid:
            pids[f"{replica.replica}/sidecar"] = replica.proxy_pid
    return pids


def snapshot(mesh: MeshState) -> dict[str, Usage]:
    """The usage of every live process of the mesh, by name."""
    found = {}
    for name, pid in named_pids(mesh).items():
        seen = usage(pid)
        if seen is not None:
            found[name] = seen
    return found


def left_behind(state_root: Path, runner_pid: int | None) -> list[tuple[int, str]]:
    """Processes still alive that belong to the mesh of ``state_root``: those carrying its
    mark (``TULLE_MESH_STATE``, set on every process ``tulle up`` starts) and its runner."""
    mark = f"TULLE_MESH_STATE={state_root.resolve()}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            status = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ours = mark in environ or int(entry.name) == runner_pid
        if ours and status != "Z":
            found.append((int(entry.name), command.strip()[:100]))
    return found
