"""The tables ``benchmarks.proxy_mtls`` prints, and issue 17's targets for the mTLS path with
whether this run met them: each sidecar at most 2x HAProxy's CPU for the same TLS work (at
saturation) and at most 100 µs per request at 1,000 requests/s; at most 64 KiB of RSS per idle
mTLS connection (B with that many straight to it; A per client connection through it, with the
mTLS connections to B it keeps); and the plain-text path at most 5% slower than before the issue
(CPU per request at saturation, against the same pair run by the code before it).
Figures, never assertions."""

from __future__ import annotations

CPU_RATIO = 2.0
CPU_AT_1K_US = 100.0
IDLE_KIB = 64.0
PLAIN_SLOWER = 0.05


def plain_name(name: str) -> str:
    """The plain pair beside an mTLS pair (``tulle-mypyc-mtls`` -> ``tulle-mypyc-plain``)."""
    return name.removesuffix("mtls") + "plain"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def report(
    rows: dict[str, dict[str, float]],
    memory: dict[str, dict[str, float]],
    quiet: dict[str, float],
    base: float,
    connections: int,
    compiled: bool,
) -> None:
    """The speed table, the idle-connection table, then the ratios and the targets."""
    direct = rows["direct"]
    print(f"baseline direct p50 at 1,000 req/s (one connection): {base:.3f} ms")
    print(f"{'path':<26}{'req/s':>8}{'A µs/req':>10}{'B µs/req':>10}{'A µs@1k':>9}{'B µs@1k':>9}"
          f"{'p50 ms':>8}{'p99 ms':>8}{'+p50 ms':>9}{'+p99 ms':>9}{'req/s range':>14}")  # fmt: skip
    for name, row in rows.items():
        cpu = (
            f"{row['a_sat']:>10.1f}{row['b_sat']:>10.1f}{row['a_1k']:>9.1f}{row['b_1k']:>9.1f}"
            if "a_sat" in row
            else " " * 38
        )
        spread = f"{row['rps_low']:.0f}-{row['rps_high']:.0f}"
        print(f"{name:<26}{row['rps']:>8.0f}{cpu}{row['p50']:>8.3f}{row['p99']:>8.3f}"
              f"{row['p50'] - direct['p50']:>9.3f}{row['p99'] - direct['p99']:>9.3f}"
              f"{spread:>14}")  # fmt: skip
    print(f"\nIdle connections: {connections} client connections through each pair after one "
          f"request each at once (A keeps the connections to B it then holds), and {connections} "
          "straight to B (mTLS with a mesh certificate for an mTLS pair), each having carried "
          "one request; RSS gained in KiB per connection. Idle CPU: the pair with no traffic.")  # fmt: skip
    print(f"{'pair':<26}{'A->B conns':>11}{'A KiB/client':>13}{'B KiB/conn':>11}"
          f"{'A MB start/end':>16}{'B MB start/end':>16}{'idle CPU ms/s':>15}")  # fmt: skip
    for name, figures in memory.items():
        a_mb = f"{figures['a_start']:.1f}/{figures['a_rss']:.1f}"
        b_mb = f"{figures['b_start']:.1f}/{figures['b_rss']:.1f}"
        print(f"{name:<26}{figures['links']:>11.0f}{figures['a_kib'] / connections:>13.1f}"
              f"{figures['b_direct']:>11.1f}{a_mb:>16}{b_mb:>16}{quiet[name]:>15.2f}")  # fmt: skip
    print(
        "(RSS at start: once the pair answered its first request; at the end: after the "
        "load and the idle connections, closed)"
    )
    haproxy = rows["haproxy-mtls"]
    haproxy_plain = rows["haproxy-plain"]
    print("\nTargets (issue 17) for each mTLS pair:")
    for name in [n for n in rows if n.startswith("tulle-") and n.endswith("mtls")]:
        row = rows[name]
        plain = rows[plain_name(name)]
        ratios = (row["a_sat"] / haproxy["a_sat"], row["b_sat"] / haproxy["b_sat"])
        tls_a = row["a_sat"] - plain["a_sat"]
        tls_b = row["b_sat"] - plain["b_sat"]
        print(f"{name}:")
        print(f"  CPU at saturation vs haproxy-mtls: A {ratios[0]:.1f}x, B {ratios[1]:.1f}x "
              f"(target <= {CPU_RATIO:.0f}x: {_met(max(ratios) <= CPU_RATIO)})")  # fmt: skip
        print(f"  CPU at 1,000 req/s: A {row['a_1k']:.0f} µs, B {row['b_1k']:.0f} µs "
              f"(target <= {CPU_AT_1K_US:.0f} µs: "
              f"{_met(max(row['a_1k'], row['b_1k']) <= CPU_AT_1K_US)})")  # fmt: skip
        if name in memory:
            b_idle = memory[name]["b_direct"]
            a_idle = memory[name]["a_kib"] / connections
            print(f"  RSS per idle mTLS connection: B {b_idle:.1f} KiB; A {a_idle:.1f} KiB per "
                  f"client connection, with {memory[name]['links']:.0f} mTLS connections to B "
                  f"kept (target <= {IDLE_KIB:.0f} KiB: "
                  f"{_met(max(a_idle, b_idle) <= IDLE_KIB)})")  # fmt: skip
        print(f"  CPU at 1,000 req/s vs haproxy-mtls: A {row['a_1k'] / haproxy['a_1k']:.1f}x, "
              f"B {row['b_1k'] / haproxy['b_1k']:.1f}x")  # fmt: skip
        print(f"  what TLS adds per request at saturation: A {tls_a:.1f} µs, B {tls_b:.1f} µs "
              f"(HAProxy: A {haproxy['a_sat'] - haproxy_plain['a_sat']:.1f} µs, "
              f"B {haproxy['b_sat'] - haproxy_plain['b_sat']:.1f} µs)")  # fmt: skip
        print(f"  req/s vs the plain pair: {row['rps'] / plain['rps']:.2f}; "
              f"vs haproxy-mtls: {row['rps'] / haproxy['rps']:.2f}")  # fmt: skip
    for build in ("", "mypyc-"):
        name, old = f"tulle-{build}plain", f"tulle-before-{build}plain"
        before = rows.get(old)
        if before is None or name not in rows:
            continue
        plain = rows[name]
        cpu_ratio = (plain["a_sat"] + plain["b_sat"]) / (before["a_sat"] + before["b_sat"])
        cpu_1k = (plain["a_1k"] + plain["b_1k"]) / (before["a_1k"] + before["b_1k"])
        speed = plain["rps"] / before["rps"]
        print(f"tulle-{build}plain against the same pair on the code before issue 17:")
        print(f"  CPU per request (A + B) at saturation: {cpu_ratio:.2f}x, at 1,000 req/s: "
              f"{cpu_1k:.2f}x; req/s {speed:.2f}x; p50 at 1,000 req/s "
              f"{plain['p50'] - before['p50']:+.3f} ms")  # fmt: skip
        if name in memory and old in memory:
            print(f"  RSS at start A {memory[name]['a_start'] - memory[old]['a_start']:+.1f} MB, "
                  f"B {memory[name]['b_start'] - memory[old]['b_start']:+.1f} MB")  # fmt: skip
        print(f"  target: at most 5% slower, judged on CPU per request at saturation (req/s "
              f"moves more than 5% between rounds on a shared machine): "
              f"{_met(cpu_ratio <= 1 + PLAIN_SLOWER)}")  # fmt: skip
    for kind in ("plain", "mtls"):
        baseline, changed = rows.get(f"tulle-base-mypyc-{kind}"), rows.get(f"tulle-mypyc-{kind}")
        if baseline is None or changed is None:
            continue
        print(f"tulle-mypyc-{kind} against tulle-base-mypyc-{kind} (--baseline-compiled), CPU per "
              f"request: at saturation A {changed['a_sat'] / baseline['a_sat']:.3f}x, "
              f"B {changed['b_sat'] / baseline['b_sat']:.3f}x; at 1,000 req/s "
              f"A {changed['a_1k'] / baseline['a_1k']:.3f}x, "
              f"B {changed['b_1k'] / baseline['b_1k']:.3f}x; "
              f"req/s {changed['rps'] / baseline['rps']:.3f}x")  # fmt: skip
    if not compiled:
        print("\n(no compiled build: `make compiled` adds the tulle-mypyc pairs)")
