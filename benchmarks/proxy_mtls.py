"""Mutual TLS between two sidecars, measured in one run against the same two hops in plain text
and against HAProxy doing the same TLS on both hops (issue 17):

    client -> proxy A -> (mTLS | plain) -> proxy B -> nginx

Tulle's pairs are real sidecars (``tulle proxy``) of a control plane that runs the mesh CA: each
proves who it is with a bootstrap token on the secure xDS port and gets its certificate through
the CA's Sign call; B's port is STRICT (mTLS pair) or DISABLE (plain pair), and A checks B's
SPIFFE id. HAProxy's pair presents certificates from the same CA (through the same call) and
verifies the peer's on both ends (``verify required``). Same client (wrk; then one connection at
a fixed rate), same nginx; the load generator on one core, every proxy and nginx on the other
(as ``benchmarks.proxy_http``). With the compiled build (``make compiled``) its pairs run too.

Reported per pair: saturation requests/s and the CPU time of A and of B per request; CPU per
request of each at a fixed 1,000 requests/s with p50/p99 and what the pair adds to direct; then
RSS with 1,000 idle keep-alive connections through the pair: each client connection carries one
request at once, so that A opens about as many connections to B (Tulle's pool then keeps 128
idle per endpoint, HAProxy all): A's RSS gained per client connection; and, first, 1,000 idle
connections straight to B (mTLS with a certificate of the mesh CA, as A's, for an mTLS pair),
each having carried one request: B's RSS gained per connection. Measures; never asserts.

    python -m benchmarks.proxy_mtls [--seconds 8] [--connections 1000] [--rounds 1]
        [--compiled DIR] [--before GIT_REF [--before-compiled DIR]]

``--before`` adds the plain pair run by the code at GIT_REF (``make bench``: the commit before
issue 17), with a control plane of that code, for the issue's "plain path no more than 5 %
slower"; ``--before-compiled`` that code's compiled build too (built by hand: ``git archive``,
then ``TULLE_COMPILE=1 pip wheel`` and ``pip install --target DIR`` as ``make compiled`` does).

Needs wrk, haproxy, nginx and taskset (``make bench`` installs them when root)."""

from __future__ import annotations

import argparse
import shutil
import socket
import ssl
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.mtls_mesh import (
    Pair,
    PairSpec,
    before_issue,
    issue_pem,
    start_before_pairs,
    start_control_plane,
    start_haproxy_pair,
    start_sidecar_pair,
)
from benchmarks.proxy_http import (
    COMPILED,
    PROJECT,
    cpu_seconds,
    deployed_python,
    fixed_rate,
    percentile,
    read_response,
    rss_mb,
    start_nginx,
    wrk,
)
from benchmarks.targets import report

FIXED_RATE = 1000
FIXED_SECONDS = 5
ORDER = ("haproxy-plain", "haproxy-mtls", "tulle-before-plain", "tulle-plain", "tulle-mtls",
         "tulle-before-mypyc-plain", "tulle-base-mypyc-plain", "tulle-base-mypyc-mtls",
         "tulle-mypyc-plain", "tulle-mypyc-mtls")  # fmt: skip
"""The order pairs are measured in, each round: what is compared, side by side."""


def cpu_us(pids: tuple[int, int], before: tuple[float, float], requests: int) -> list[float]:
    return [
        (cpu_seconds(pid) - start) / requests * 1e6 for pid, start in zip(pids, before, strict=True)
    ]


def measure(pair: Pair, seconds: int) -> dict[str, float]:
    """Saturation (wrk, 16 connections) then one connection at 1,000 requests/s: requests/s,
    CPU µs per request of A and B in each, and the latencies."""
    pids = (pair.a.pid, pair.b.pid)
    wrk(pair.port, 2, pair.host)  # warm up
    before = (cpu_seconds(pids[0]), cpu_seconds(pids[1]))
    rate, total = wrk(pair.port, seconds, pair.host)
    saturated = cpu_us(pids, before, total)
    before = (cpu_seconds(pids[0]), cpu_seconds(pids[1]))
    latencies = fixed_rate(pair.port, FIXED_RATE, FIXED_SECONDS, pair.host)
    fixed = cpu_us(pids, before, len(latencies))
    return {
        "rps": rate, "a_sat": saturated[0], "b_sat": saturated[1], "a_1k": fixed[0],
        "b_1k": fixed[1], "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99),
    }  # fmt: skip


def connections(pid: int, remote_port: int) -> int:
    """Established TCP connections of process ``pid`` to ``remote_port`` on loopback."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            link = fd.readlink().name
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        port = int(fields[2].rsplit(":", 1)[1], 16)
        if fields[3] == "01" and port == remote_port and fields[9] in inodes:
            count += 1
    return count


def through_a(pair: Pair, count: int) -> dict[str, float]:
    """RSS (KiB) A and B gain with ``count`` idle client connections through the pair, each
    having carried one request at the same time as the others (up to five bursts, until A holds
    about ``count`` connections to B or holds no more than after the last burst), and the
    connections between A and B then: Tulle's pool keeps at most 128 idle per endpoint."""
    pids = (pair.a.pid, pair.b.pid)
    base = [rss_kib(pid) for pid in pids]
    request = f"GET / HTTP/1.1\r\nHost: {pair.host}\r\n\r\n".encode()
    sockets = [socket.create_connection(("127.0.0.1", pair.port)) for _ in range(count)]
    try:
        links = -1
        for _ in range(5):
            for sock in sockets:
                sock.sendall(request)
            for sock in sockets:
                read_response(sock)
            before, links = links, connections(pair.a.pid, pair.b_port)
            if links >= count * 0.98 or links == before:
                break
        grown = [rss_kib(pid) - start for pid, start in zip(pids, base, strict=True)]
    finally:
        for sock in sockets:
            sock.close()
    return {"links": links, "a_kib": grown[0], "b_kib": grown[1],
            "a_rss": rss_kib(pids[0]) / 1024, "b_rss": rss_kib(pids[1]) / 1024}  # fmt: skip


def into_b(pair: Pair, count: int, tls: ssl.SSLContext | None) -> float:
    """KiB of RSS B gains per idle connection with ``count`` connections straight to B's
    listener, each of which completed its handshake (``tls``: mTLS with a certificate from the
    mesh CA, as A's) and carried one request."""
    base = rss_kib(pair.b.pid)
    request = f"GET / HTTP/1.1\r\nHost: {pair.host}\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):  # each asks at once: a connection without a request is closed
            sock = socket.create_connection(("127.0.0.1", pair.b_port))  # after 10 s (408)
            sockets.append(tls.wrap_socket(sock) if tls is not None else sock)
            sockets[-1].sendall(request)
            read_response(sockets[-1])
        return (rss_kib(pair.b.pid) - base) / count
    finally:
        for sock in sockets:
            sock.close()


def rss_kib(pid: int) -> float:
    return rss_mb(pid) * 1024


def idle_cpu(pairs: list[Pair], seconds: float = 3.0) -> dict[str, float]:
    """CPU ms per second each pair (A + B) spends with no traffic (timers, xDS, stats)."""
    pids = {pair.name: (pair.a.pid, pair.b.pid) for pair in pairs}
    before = {name: sum(map(cpu_seconds, each)) for name, each in pids.items()}
    time.sleep(seconds)
    return {
        name: (sum(map(cpu_seconds, each)) - before[name]) / seconds * 1000
        for name, each in pids.items()
    }


def client_context(pem: Path, roots: Path) -> ssl.SSLContext:
    """What a mesh client presents to B: a certificate of the mesh CA; B's checked against the
    mesh's roots (not its name: mesh servers are known by SPIFFE id)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=roots)
    context.load_cert_chain(pem)
    context.set_alpn_protocols(["http/1.1"])
    return context


def median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds, and the range of requests/s."""
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]}
    rates = [row["rps"] for row in rows]
    return {**median, "rps_low": min(rates), "rps_high": max(rates)}


def direct(backend: int, seconds: int) -> dict[str, float]:
    wrk(backend, 2)
    rate, _ = wrk(backend, seconds)
    latencies = fixed_rate(backend, FIXED_RATE, FIXED_SECONDS)
    return {"rps": rate, "p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure every path this many times, in turn; report medians")  # fmt: skip
    parser.add_argument("--compiled", type=Path, default=COMPILED,
                        help="the compiled build to run as well (default build/compiled)")  # fmt: skip
    parser.add_argument(
        "--before",
        metavar="GIT_REF",
        help="also run the plain pair on the code at GIT_REF (before issue 17)",
    )
    parser.add_argument("--before-compiled", type=Path, metavar="DIR",
                        help="and on that code's compiled build, installed in DIR")  # fmt: skip
    parser.add_argument("--baseline-compiled", type=Path, metavar="DIR",
                        help="another compiled build (say, of the commit before a change), run as "
                        "the tulle-base-mypyc pairs beside the tulle-mypyc ones, under the same "
                        "control plane: a change measured in one run")  # fmt: skip
    parser.add_argument("--compiled-only", action="store_true",
                        help="no pairs run from the sources (pure Python)")  # fmt: skip
    parser.add_argument("--no-memory", action="store_true",
                        help="skip the idle-connection (RSS) measurements")  # fmt: skip
    parser.add_argument("--no-access-log", action="store_true",
                        help="the sidecars' access log off (a Mesh resource), as HAProxy here "
                        "logs nothing and Istio's default is; Tulle's default logs every "
                        "request")  # fmt: skip
    args = parser.parse_args()
    for tool in ("wrk", "haproxy", "nginx", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"benchmark needs {tool} (apt-get install wrk haproxy nginx-light)")
    specs = [] if args.compiled_only else [PairSpec("plain", False, PROJECT),
                                           PairSpec("mtls", True, PROJECT)]  # fmt: skip
    compiled = (args.compiled / "tulle").is_dir()
    if compiled:
        specs += [PairSpec("mypyc-plain", False, args.compiled.resolve()),
                  PairSpec("mypyc-mtls", True, args.compiled.resolve())]  # fmt: skip
    if args.baseline_compiled:
        base = args.baseline_compiled.resolve()
        specs += [PairSpec("base-mypyc-plain", False, base),
                  PairSpec("base-mypyc-mtls", True, base)]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        procs: list[subprocess.Popen[bytes]] = []
        try:
            nginx, backend = start_nginx(work)
            procs.append(nginx)
            plane = start_control_plane(work, specs, access_log=not args.no_access_log)
            procs.append(plane.proc)
            pairs = [start_haproxy_pair(plane, work, False, backend),
                     start_haproxy_pair(plane, work, True, backend)]  # fmt: skip
            procs += [p for pair in pairs for p in (pair.a, pair.b)]
            python = deployed_python(work)
            for spec in specs:
                pair = start_sidecar_pair(plane, python, spec, backend)
                procs += [pair.a, pair.b]
                pairs.append(pair)
            before = []
            if args.before:
                before.append(PairSpec("before-plain", False, before_issue(args.before, work)))
            if args.before_compiled:
                before.append(PairSpec("before-mypyc-plain", False, args.before_compiled))
            if before:
                old_plane, old_pairs = start_before_pairs(work, python, before, backend)
                procs += [old_plane.proc, *(p for pair in old_pairs for p in (pair.a, pair.b))]
                pairs += old_pairs
            started = {pair.name: (rss_kib(pair.a.pid), rss_kib(pair.b.pid)) for pair in pairs}
            base = statistics.median(fixed_rate(backend, FIXED_RATE, 3))
            order = sorted(pairs, key=lambda pair: ORDER.index(pair.name))
            rounds: list[dict[str, dict[str, float]]] = []
            for _ in range(args.rounds):
                measured = {"direct": direct(backend, args.seconds)}
                measured.update({pair.name: measure(pair, args.seconds) for pair in order})
                rounds.append(measured)
            rows = {name: median_row([each[name] for each in rounds]) for name in rounds[0]}
            quiet = idle_cpu(pairs)
            tls = client_context(issue_pem(plane, "bench", "bench-0", work), plane.root_cert)
            memory: dict[str, dict[str, float]] = {}
            for pair in [] if args.no_memory else pairs:  # B first: the connections A opens
                mtls = pair.name.endswith("mtls")  # to B stay open
                b_direct = into_b(pair, args.connections, tls if mtls else None)
                memory[pair.name] = {**through_a(pair, args.connections), "b_direct": b_direct,
                                     "a_start": started[pair.name][0] / 1024,
                                     "b_start": started[pair.name][1] / 1024}  # fmt: skip
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
    report(rows, memory, quiet, base, args.connections, compiled)


if __name__ == "__main__":
    main()
