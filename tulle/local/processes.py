"""Starting and stopping the mesh's processes. Each child runs in its own session (Ctrl-C in the
terminal reaches only the runner, which then stops everything in order) and is killed by the
kernel if the runner dies first (``PR_SET_PDEATHSIG``), so no process outlives its runner, even
one killed with SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path

PR_SET_PDEATHSIG = 1


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec function: the child gets SIGKILL when ``parent`` exits."""

    def arrange() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return arrange


async def spawn(
    args: Sequence[str], env: dict[str, str], log: Path, cwd: Path | None = None
) -> asyncio.subprocess.Process:
    """Start ``args`` with its output appended to ``log``."""
    with open(log, "ab") as output:
        return await asyncio.create_subprocess_exec(
            *args,
            env=env,
            cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with(os.getpid()),
        )


def signal_group(pid: int, sig: int) -> None:
    """Send ``sig`` to the process group led by ``pid`` (the child and anything it started)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


async def stop(process: asyncio.subprocess.Process, grace: float) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; the exit status."""
    if process.returncode is not None:
        return process.returncode
    signal_group(process.pid, signal.SIGTERM)
    try:
        return await asyncio.wait_for(process.wait(), grace)
    except TimeoutError:
        signal_group(process.pid, signal.SIGKILL)
        return await process.wait()


def describe_exit(code: int) -> str:
    """``exit 3`` or ``killed by SIGKILL``."""
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"
