"""``tulle up``, ``status``, ``logs`` and ``down``: a whole mesh on this machine (local mode)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from tulle.local.state import MeshState, StateDir, alive

if TYPE_CHECKING:
    from tulle.local.runner import Runner

StateOption = Annotated[
    Path, typer.Option("--state-dir", help="Where the running mesh keeps its state and logs.")
]
DEFAULT_STATE = Path(".tulle")


def up(
    files: Annotated[
        list[Path], typer.Option("-f", "--file", help="Config files or directories (Workloads).")
    ],
    state_dir: StateOption = DEFAULT_STATE,
    detach: Annotated[
        bool, typer.Option("-d", "--detach", help="Run in the background; return once ready.")
    ] = False,
    api_port: Annotated[int, typer.Option(help="Control plane API port (0: any).")] = 15014,
    xds_port: Annotated[int, typer.Option(help="Control plane xDS port (0: any).")] = 15010,
    grace: Annotated[float, typer.Option(help="Seconds each process has to stop.")] = 10.0,
    ready_timeout: Annotated[float, typer.Option(help="With -d: seconds to wait.")] = 120.0,
    pods: Annotated[
        bool, typer.Option(help="Each replica in its own network namespace, as a pod (root).")
    ] = False,
) -> None:
    """Start the control plane and every Workload's replicas; stop them all on Ctrl-C."""
    from tulle.local.pods import remove_network
    from tulle.local.runner import MeshConfigError, Runner, RunOptions

    for path in files:
        if not path.exists():
            raise _fail(f"error: {path}: no such file or directory", 2)
    state = StateDir(state_dir)
    running = state.read()
    if running is not None and alive(running.runner_pid):
        raise _fail(f"error: a mesh already runs from {state_dir} (runner pid "
                    f"{running.runner_pid}); stop it with `tulle down`")  # fmt: skip
    if running is not None and running.network:  # a crashed run's pods: theirs to remove
        remove_network(running.network["bridge"], running.network.get("namespaces", []))
    if pods and os.geteuid() != 0:
        raise _fail("error: --pods needs root (network namespaces, veths and iptables)")
    if detach:
        _up_detached(files, state, api_port, xds_port, grace, ready_timeout, pods)
        return
    options = RunOptions(files, state, api_port, xds_port, grace, pods)
    try:
        asyncio.run(_run_until_signalled(Runner(options, lambda line: print(line, flush=True))))
    except MeshConfigError as error:
        raise _fail(f"error: the mesh config has errors:\n{error}") from None
    except (RuntimeError, OSError) as error:  # PodsError included
        raise _fail(f"error: {error}") from None


async def _run_until_signalled(runner: Runner) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, runner.stopping.set)
    await runner.run()


def _up_detached(
    files: list[Path], state: StateDir, api_port: int, xds_port: int, grace: float,
    timeout: float, pods: bool,
) -> None:  # fmt: skip
    state.prepare()
    args = [sys.executable, "-m", "tulle", "up", "--state-dir", str(state.root),
            "--api-port", str(api_port), "--xds-port", str(xds_port),
            "--grace", str(grace)]  # fmt: skip
    if pods:
        args.append("--pods")
    for path in files:
        args += ["-f", str(path)]
    log = state.log("runner")
    with open(log, "wb") as output:
        runner = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if runner.poll() is not None:
            raise _fail(f"error: tulle up exited ({runner.returncode}):\n{log.read_text()}")
        mesh = state.read()
        if mesh is not None and mesh.runner_pid == runner.pid and mesh.phase == "running":
            print(f"tulle up: mesh running in the background (pid {runner.pid}); "
                  f"control plane API {mesh.api}")  # fmt: skip
            _print_status(mesh)
            return
        time.sleep(0.2)
    raise _fail(f"error: the mesh was not ready within {timeout:g}s; see `tulle status` "
                f"and {log} (it keeps running; `tulle down` stops it)")  # fmt: skip


def status(
    state_dir: StateOption = DEFAULT_STATE,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
) -> None:
    """Every replica: workload, mode, ready, restarts, age, address."""
    mesh = _running(StateDir(state_dir))
    if output == "json":
        print(json.dumps(asdict(mesh), indent=2))
        return
    _print_status(mesh)


def _print_status(mesh: MeshState) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("WORKLOAD", "REPLICA", "MODE", "READY", "RESTARTS", "AGE", "ADDRESS"):
        table.add_column(column)
    now = time.time()
    for replica in mesh.replicas:
        restarts = str(replica.restarts)
        if replica.last_exit:
            restarts += f" ({replica.last_exit})"
        age = _age(now - replica.started_at) if replica.started_at else "-"
        ready = "1/1" if replica.ready else "0/1"
        table.add_row(replica.workload, replica.replica, replica.mode, ready, restarts, age,
                      replica.address)  # fmt: skip
    Console(width=160).print(table)


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def logs(
    target: Annotated[str, typer.Argument(help="WORKLOAD, WORKLOAD/REPLICA or controlplane.")],
    container: Annotated[
        str,
        typer.Option(
            "-c", "--container", help="app, proxy (the sidecar) or agent (proxyless gRPC)."
        ),
    ] = "app",
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Keep printing.")] = False,
    state_dir: StateOption = DEFAULT_STATE,
) -> None:
    """Print a replica's (or every replica of a workload's) output."""
    state = StateDir(state_dir)
    if target == "controlplane":
        paths = [state.log("controlplane")]
    else:
        if container not in ("app", "proxy", "agent"):
            raise _fail(f"error: --container {container!r}: use app, proxy or agent")
        mesh = _running(state, need_runner=False)
        workload, _, replica = target.partition("/")
        names = [r.replica for r in mesh.replicas if r.workload == workload
                 and (not replica or r.replica == replica)]  # fmt: skip
        if not names:
            known = sorted({r.workload for r in mesh.replicas})
            raise _fail(f"error: no replica {target!r}; workloads: {', '.join(known)}")
        paths = [state.log(f"{name}.{container}") for name in names]
    _print_logs(paths, follow)


def _print_logs(paths: list[Path], follow: bool) -> None:
    prefix = len(paths) > 1
    offsets = dict.fromkeys(paths, 0)
    while True:
        for path in paths:
            try:
                with open(path, "rb") as file:
                    file.seek(offsets[path])
                    data = file.read()
            except FileNotFoundError:
                continue
            offsets[path] += len(data)
            text = data.decode(errors="replace")
            for line in text.splitlines():
                print(f"[{path.stem}] {line}" if prefix else line, flush=True)
        if not follow:
            return
        time.sleep(0.3)


def down(
    state_dir: StateOption = DEFAULT_STATE,
    force: Annotated[
        bool, typer.Option(help="Kill what a crashed `tulle up` left behind, and forget it.")
    ] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for a clean stop.")] = 60.0,
) -> None:
    """Stop the mesh: deregister, drain, SIGTERM, SIGKILL after the grace period."""
    from tulle.local.pods import remove_network
    from tulle.local.processes import signal_group

    state = StateDir(state_dir)
    mesh = state.read()
    if mesh is None:
        print(f"no mesh runs from {state_dir}")
        return
    if alive(mesh.runner_pid) and not force:
        os.kill(mesh.runner_pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(mesh.runner_pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not alive(mesh.runner_pid):
            print("tulle down: stopped")
            return
        print(f"tulle down: the runner did not stop within {timeout:g}s; killing", file=sys.stderr)
    for pid in [mesh.runner_pid, *mesh.pids()]:
        if alive(pid):
            signal_group(pid, signal.SIGKILL)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    if mesh.network:  # --pods: the namespaces, veths, bridge and hosts files it left
        remove_network(mesh.network["bridge"], mesh.network.get("namespaces", []))
    state.clear()
    print("tulle down: killed what was left and cleared the state")


def top(
    state_dir: StateOption = DEFAULT_STATE,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    once: Annotated[bool, typer.Option(help="Print one table (after one interval).")] = False,
) -> None:
    """Per-service requests/s, success rate and p50/p99 latency, live (Ctrl-C to stop)."""
    from rich.console import Console
    from rich.live import Live

    from tulle.local.top import Watcher, table

    watcher = Watcher(_running(StateDir(state_dir)))
    try:
        if once:
            time.sleep(interval)
            Console(width=160).print(table(watcher.next()))
            return
        with Live(table([]), refresh_per_second=4) as live:
            while True:
                time.sleep(interval)
                live.update(table(watcher.next()))
    except KeyboardInterrupt:
        pass
    finally:
        watcher.close()


def _running(state: StateDir, need_runner: bool = True) -> MeshState:
    mesh = state.read()
    if mesh is None:
        raise _fail(f"no mesh runs from {state.root} (start one with `tulle up -f PATH`)")
    if need_runner and not alive(mesh.runner_pid):
        print(f"warning: the runner (pid {mesh.runner_pid}) is gone; this is what it left "
              "(`tulle down --force` cleans up)", file=sys.stderr)  # fmt: skip
    return mesh


def _fail(message: str, code: int = 1) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(code)
