"""Data-plane speed: direct to nginx, through HAProxy (one thread) and through ``tulle proxy``
(one process), measured in one run with the load generator on one core and proxy plus backend on
the other. HTTP/1.1 keep-alive, 1 KiB responses. Reports saturation requests/s, proxy CPU per
request, added latency at a fixed 1,000 requests/s, and the proxy's RSS, with ratios. When the
compiled build exists (``make compiled``), a second sidecar runs it (row ``tulle-mypyc``), and
one more compares tracing off, at 1 % and at 100 %, its Mesh switched between them
(``benchmarks.sidecar_tracing``).
The sidecars run as an installed wheel would: from a venv of their own whose path holds the
sources (or the compiled build) and the development venv's dependencies, without the editable
install's import hook, which the development venv loads into every process (~0.2 MB of RSS).

    python -m benchmarks.proxy_http [--seconds 8] [--million] [--tracing-rounds 3]

Needs wrk, haproxy and nginx (Debian packages; ``make bench`` installs them when root)."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from pathlib import Path

import httpx

from tulle.security.tokens import admin_token

TICKS = os.sysconf("SC_CLK_TCK")
LOAD_CPU, SERVER_CPU = "0", "1"
BODY = "x" * 1024
TULLE = str(Path(sys.executable).parent / "tulle")
PROJECT = Path(__file__).resolve().parent.parent
# the compiled build (``make compiled``); TULLE_BENCH_COMPILED names another (a build of a commit)
COMPILED = Path(os.environ.get("TULLE_BENCH_COMPILED", PROJECT / "build" / "compiled"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def pinned(cpu: str, args: list[str], **kwargs: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen(["taskset", "-c", cpu, *args], **kwargs)  # type: ignore[call-overload]


def wait_port(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_nginx(work: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (work / "nginx.conf").write_text(
        f"""
worker_processes 1; daemon off; master_process off; pid {work}/nginx.pid;
error_log {work}/nginx.err;
events {{ worker_connections 4096; }}
http {{
  access_log off; keepalive_requests 10000000; keepalive_timeout 120s;
  client_body_temp_path {work}; proxy_temp_path {work}; fastcgi_temp_path {work};
  uwsgi_temp_path {work}; scgi_temp_path {work};
  server {{ listen 127.0.0.1:{port}; location / {{ default_type text/plain; return 200 "{BODY}"; }} }}
}}
"""
    )
    proc = pinned(SERVER_CPU, ["nginx", "-c", str(work / "nginx.conf"), "-p", str(work)])
    wait_port(port)
    return proc, port


def start_haproxy(work: Path, backend: int) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    (work / "haproxy.cfg").write_text(
        f"""
global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
frontend in
  bind 127.0.0.1:{port}
  default_backend out
backend out
  server nginx 127.0.0.1:{backend}
"""
    )
    proc = pinned(SERVER_CPU, ["haproxy", "-f", str(work / "haproxy.cfg")])
    wait_port(port)
    return proc, port


def start_control_plane(
    work: Path, backend: int, mesh: str = ""
) -> tuple[subprocess.Popen[bytes], str]:
    """``tulle controlplane`` with ``web:8080`` served by ``backend`` (and the ``mesh``
    resource, YAML, when given); its xDS address."""
    plane, xds, _ = start_control_plane_api(work, backend, mesh)
    return plane, xds


def start_control_plane_api(
    work: Path, backend: int, mesh: str = ""
) -> tuple[subprocess.Popen[bytes], str, str]:
    """:func:`start_control_plane`, and its HTTP API's URL (:func:`apply` posts to it)."""
    plane = pinned(
        SERVER_CPU,
        [TULLE, "controlplane", "--state-dir", str(work / "state"), "--xds-port", "0",
         "--secure-xds-port", "0", "--insecure-xds", "--http-port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert plane.stdout is not None
    line = plane.stdout.readline().decode()
    xds = line.split("xDS on ")[1].split(",")[0]
    api = line.rsplit(" ", 1)[1].strip()
    headers = {"authorization": f"Bearer {admin_token(work / 'state')}"}
    httpx.post(
        f"{api}/api/v1/endpoints",
        json={"service": "web", "address": "127.0.0.1", "port": backend, "servicePort": 8080},
        headers=headers,
    ).raise_for_status()
    if mesh:
        apply(work, api, mesh)
    return plane, xds, api


def apply(work: Path, api: str, resources: str) -> None:
    """Resources (YAML) applied through the control plane's API (its state in ``work``)."""
    headers = {"authorization": f"Bearer {admin_token(work / 'state')}"}
    httpx.post(f"{api}/api/v1/resources", content=resources, headers=headers).raise_for_status()


def deployed_python(work: Path) -> str:
    """A Python for the sidecars that loads Tulle as a wheel install does: a venv whose
    site-packages lists the development venv's (for the dependencies), so none of the
    development venv's ``.pth`` hooks run; PYTHONPATH then says which Tulle."""
    venv.create(work / "venv", with_pip=False)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = work / "venv" / "lib" / version / "site-packages"
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(work / "venv" / "bin" / "python")


def start_sidecar(
    xds: str, python: str, pod: str = "bench-0", compiled: bool = False, admin: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    """``tulle proxy`` run by ``python`` (see ``deployed_python``) from the sources, or from the
    compiled build with ``compiled``, with its HTTP proxy listener (and its admin listener on
    ``admin``, when given), once ready; the listener's port."""
    port = free_port()
    admin = admin or free_port()
    env = dict(os.environ, PYTHONPATH=str(COMPILED if compiled else PROJECT))
    proxy = pinned(
        SERVER_CPU,
        [python, "-m", "tulle", "proxy", "--xds", xds, "--node-id",
         f"sidecar~127.0.0.1~{pod}.default~default.svc.cluster.local",
         "--admin-port", str(admin), "--http-proxy-port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        cwd=Path(python).parent.parent,  # the venv, not the project: its tulle would come first
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{admin}/ready").status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    return proxy, port


def wrk(port: int, seconds: int, host: str = "web:8080") -> tuple[float, int]:
    out = subprocess.run(
        ["taskset", "-c", LOAD_CPU, "wrk", "-t1", "-c16", f"-d{seconds}s", "-H", f"Host: {host}",
         f"http://127.0.0.1:{port}/"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rate, total


def fixed_rate(port: int, rate: int, seconds: int, host: str = "web:8080") -> list[float]:
    """Latencies (ms) of sequential keep-alive requests sent at ``rate`` per second."""
    os.sched_setaffinity(0, {int(LOAD_CPU)})
    request = f"GET / HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()
    latencies = []
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        for index in range(rate * seconds):
            due = start + index / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sent = time.perf_counter()
            sock.sendall(request)
            read_response(sock)
            latencies.append((time.perf_counter() - sent) * 1000)
    return latencies


def read_response(sock: socket.socket) -> None:
    """One HTTP/1.1 response with a Content-Length, read off ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed before a response")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def measure(port: int, pid: int | None, seconds: int) -> dict[str, float]:
    """Saturation req/s and CPU per request (of ``pid``), then latency at 1,000 req/s."""
    wrk(port, 2)  # warm up
    before = cpu_seconds(pid) if pid else 0.0
    rate, total = wrk(port, seconds)
    cpu_us = (cpu_seconds(pid) - before) / total * 1e6 if pid else 0.0
    latencies = fixed_rate(port, 1000, 5)
    return {
        "rps": rate,
        "cpu_us": cpu_us,
        "p50": percentile(latencies, 0.5),
        "p90": percentile(latencies, 0.9),
        "p99": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--million", action="store_true", help="RSS after a million requests")
    parser.add_argument("--tracing-rounds", type=int, default=3,
                        help="rounds of tracing off / 1 %% / 100 %% (compiled build; 0: none)")  # fmt: skip
    args = parser.parse_args()
    for tool in ("wrk", "haproxy", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"benchmark needs {tool} (apt-get install wrk haproxy nginx-light)")
    compiled = (COMPILED / ".built").exists()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nginx, backend = start_nginx(work)
            procs.append(nginx)
            haproxy, haproxy_port = start_haproxy(work, backend)
            procs.append(haproxy)
            plane, xds = start_control_plane(work, backend)
            procs.append(plane)
            targets: dict[str, tuple[int, int | None]] = {
                "direct": (backend, None),
                "haproxy": (haproxy_port, haproxy.pid),
            }
            python = deployed_python(work)
            sidecars = {"tulle": start_sidecar(xds, python)}
            if compiled:
                sidecars["tulle-mypyc"] = start_sidecar(xds, python, "bench-1", compiled=True)
            for name, (proxy, port) in sidecars.items():
                procs.append(proxy)
                targets[name] = (port, proxy.pid)
            base = statistics.median(fixed_rate(backend, 1000, 3))
            rows = {name: measure(port, pid, args.seconds) for name, (port, pid) in targets.items()}
            rss = {}
            for name, (proxy, port) in sidecars.items():
                served = 0
                while args.million and served < 1_000_000:
                    served += wrk(port, 20)[1]
                rss[name] = rss_mb(proxy.pid)
            if compiled and args.tracing_rounds:
                report(rows, rss, base, args.million, compiled)
                from benchmarks.sidecar_tracing import compare  # it imports this module

                compare(work, backend, python, args.tracing_rounds, args.seconds)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(10)
    if not (compiled and args.tracing_rounds):
        report(rows, rss, base, args.million, compiled)


def report(
    rows: dict[str, dict[str, float]],
    rss: dict[str, float],
    base: float,
    million: bool,
    compiled: bool,
) -> None:
    """The table and the ratios of each Tulle row to direct and to HAProxy."""
    direct, haproxy_row = rows["direct"], rows["haproxy"]
    print(f"baseline direct p50 at 1,000 req/s: {base:.3f} ms")
    print(f"{'path':<12}{'req/s':>10}{'CPU µs/req':>12}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
          f"{'added p50':>11}{'added p99':>11}")  # fmt: skip
    for name, row in rows.items():
        print(
            f"{name:<12}{row['rps']:>10.0f}{row['cpu_us']:>12.1f}{row['p50']:>9.3f}{row['p90']:>9.3f}"
            f"{row['p99']:>9.3f}{row['p50'] - direct['p50']:>11.3f}{row['p99'] - direct['p99']:>11.3f}"
        )
    for name, megabytes in rss.items():
        row = rows[name]
        print()
        print(f"{name} / direct req/s:   {row['rps'] / direct['rps']:.2f}")
        print(f"{name} / haproxy req/s:  {row['rps'] / haproxy_row['rps']:.2f}")
        print(f"{name} / haproxy CPU:    {row['cpu_us'] / haproxy_row['cpu_us']:.1f}x")
        print(f"{name} RSS: {megabytes:.1f} MB" + (" after 1,000,000 requests" if million else ""))
    if not compiled:
        print("\n(no compiled build: `make compiled` adds the tulle-mypyc row)")


if __name__ == "__main__":
    main()
