"""The trade-off between the two ways into the mesh, measured: the same client program sends
the same requests (HTTP/1.1 keep-alive, 1 KiB responses from nginx) with plain httpx straight to
the backend, with ``tulle.client`` (the mesh in the client's process), and with httpx through a
``tulle proxy`` sidecar. Reports the client process's CPU per request (all its threads), the
sidecar's CPU per request, and latency at a fixed rate, for the async and the sync httpx client.

    python -m benchmarks.client_modes [--requests 3000] [--rate 500] [--seconds 4]

The client runs on one core; nginx, the control plane and the sidecar on the other. Needs nginx
(``make bench`` installs it when root)."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.proxy_http import (
    LOAD_CPU,
    cpu_seconds,
    deployed_python,
    percentile,
    start_control_plane,
    start_nginx,
    start_sidecar,
)

MODES = ("plain", "library", "sidecar")
LIBRARY_NODE = "library~127.0.0.1~bench-client-0.default~default.svc.cluster.local"


def process_cpu() -> float:
    """CPU seconds of this process, every thread included (the library's background thread)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the client program (one mode per process) -----------------------------------------------


def client_for(mode: str, target: dict[str, Any], sync: bool) -> httpx.Client | httpx.AsyncClient:
    """The httpx client of ``mode``: only how it is made differs between modes."""
    if mode == "library":
        import tulle.client

        tulle.client.configure(xds_address=target["xds"], node_id=LIBRARY_NODE)
        tulle.client.wait_ready(15)
        return tulle.client.Client() if sync else tulle.client.AsyncClient()
    proxy = f"http://127.0.0.1:{target['proxy']}" if mode == "sidecar" else None
    return httpx.Client(proxy=proxy) if sync else httpx.AsyncClient(proxy=proxy)


def url_for(mode: str, target: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{target['backend']}/" if mode == "plain" else "http://web:8080/"


async def run_async(client: httpx.AsyncClient, url: str, args: argparse.Namespace) -> dict:
    async def one() -> None:
        response = await client.get(url)
        if response.status_code != 200 or len(response.content) != 1024:
            raise SystemExit(f"{url}: unexpected answer {response}")

    for _ in range(args.warmup):
        await one()
    began, cpu = time.perf_counter(), process_cpu()
    for _ in range(args.requests):
        await one()
    cpu_us = (process_cpu() - cpu) / args.requests * 1e6
    closed = args.requests / (time.perf_counter() - began)
    latencies = []
    start = time.perf_counter()
    for index in range(args.rate * args.seconds):
        pause = start + index / args.rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        sent = time.perf_counter()
        await one()
        latencies.append((time.perf_counter() - sent) * 1000)
    await client.aclose()
    return {"cpu_us": cpu_us, "closed_rps": closed, "latencies": latencies}


def run_sync(client: httpx.Client, url: str, args: argparse.Namespace) -> dict:
    def one() -> None:
        response = client.get(url)
        if response.status_code != 200 or len(response.content) != 1024:
            raise SystemExit(f"{url}: unexpected answer {response}")

    for _ in range(args.warmup):
        one()
    began, cpu = time.perf_counter(), process_cpu()
    for _ in range(args.requests):
        one()
    cpu_us = (process_cpu() - cpu) / args.requests * 1e6
    closed = args.requests / (time.perf_counter() - began)
    latencies = []
    start = time.perf_counter()
    for index in range(args.rate * args.seconds):
        pause = start + index / args.rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        sent = time.perf_counter()
        one()
        latencies.append((time.perf_counter() - sent) * 1000)
    client.close()
    return {"cpu_us": cpu_us, "closed_rps": closed, "latencies": latencies}


def client_main(args: argparse.Namespace) -> None:
    target = json.loads(args.target)
    client = client_for(args.client, target, args.sync)
    url = url_for(args.client, target)
    if isinstance(client, httpx.Client):
        result = run_sync(client, url, args)
    else:
        import uvloop

        result = uvloop.run(run_async(client, url, args))
    Path(args.out).write_text(json.dumps(result))
    if args.client == "library":
        import tulle.client

        tulle.client.shutdown()


# --- the orchestrator --------------------------------------------------------------------------


def measure(
    mode: str, sync: bool, target: dict[str, Any], args: argparse.Namespace, work: Path
) -> dict:
    out = work / f"{mode}-{sync}.json"
    command = [
        "taskset", "-c", LOAD_CPU, sys.executable, "-m", "benchmarks.client_modes",
        "--client", mode, "--target", json.dumps(target), "--out", str(out),
        "--requests", str(args.requests), "--warmup", str(args.warmup),
        "--rate", str(args.rate), "--seconds", str(args.seconds),
    ] + (["--sync"] if sync else [])  # fmt: skip
    sidecar_pid = target["sidecar_pid"]
    before = cpu_seconds(sidecar_pid)
    # The client's stdout takes the library's access log, as an app's would.
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=Path(__file__).parent.parent)
    result: dict[str, Any] = json.loads(out.read_text())
    total = args.warmup + args.requests + args.rate * args.seconds
    sidecar_cpu = (cpu_seconds(sidecar_pid) - before) / total * 1e6
    result["sidecar_cpu_us"] = sidecar_cpu if mode == "sidecar" else 0.0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--sync", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client_main(args)
        return
    for tool in ("nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"benchmark needs {tool} (apt-get install nginx-light)")
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nginx, backend = start_nginx(work)
            procs.append(nginx)
            plane, xds = start_control_plane(work, backend)
            procs.append(plane)
            sidecar, proxy_port = start_sidecar(xds, deployed_python(work))
            procs.append(sidecar)
            target = {"backend": backend, "xds": xds, "proxy": proxy_port,
                      "sidecar_pid": sidecar.pid}  # fmt: skip
            for flavour in ("async", "sync"):
                for mode in MODES:
                    rows[(flavour, mode)] = measure(mode, flavour == "sync", target, args, work)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    report(rows, args)


def report(rows: dict[tuple[str, str], dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"client CPU: {args.requests} sequential requests; latency: {args.rate} req/s for "
          f"{args.seconds} s (nginx 1 KiB, keep-alive)")  # fmt: skip
    print(f"{'client':<7}{'mode':<9}{'client CPU µs':>14}{'sidecar CPU µs':>15}{'total µs':>10}"
          f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}")  # fmt: skip
    for (flavour, mode), row in rows.items():
        latencies = row["latencies"]
        total = row["cpu_us"] + row["sidecar_cpu_us"]
        print(
            f"{flavour:<7}{mode:<9}{row['cpu_us']:>14.1f}{row['sidecar_cpu_us']:>15.1f}"
            f"{total:>10.1f}{percentile(latencies, 0.5):>9.3f}{percentile(latencies, 0.9):>9.3f}"
            f"{percentile(latencies, 0.99):>9.3f}"
        )
    print()
    for flavour in ("async", "sync"):
        plain, library = rows[(flavour, "plain")], rows[(flavour, "library")]
        extra_cpu = library["cpu_us"] / plain["cpu_us"] - 1
        extra_p50 = percentile(library["latencies"], 0.5) - percentile(plain["latencies"], 0.5)
        print(f"{flavour}: tulle.client adds {extra_cpu:+.0%} client CPU and {extra_p50:+.3f} ms "
              f"at p50 to plain httpx (target: <= +15%, <= +0.05 ms)")  # fmt: skip


if __name__ == "__main__":
    main()
