"""``python -m benchmarks.soak``: one soak run (docs/soak.md).

    python -m benchmarks.soak [--seconds 600] [--rate 50] [--every 20] [--pods] [--work DIR]

It stops by itself, stops every process it started (and says so), and prints the table; the
table, what it was made from (benchmarks/soak/saved.py) and the mesh's logs stay in the work
directory."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
from pathlib import Path

from benchmarks.soak.report import render
from benchmarks.soak.run import Options, Soak
from benchmarks.soak.saved import save


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _kinds(text: str | None, parser: argparse.ArgumentParser) -> tuple[str, ...] | None:
    if text is None:
        return None
    kinds = tuple(k.strip() for k in text.split(",") if k.strip() and k.strip() != "none")
    unknown = set(kinds) - {"controlplane", "drain", "sidecar", "netem"}
    if unknown:
        parser.error(f"--kinds: unknown {', '.join(sorted(unknown))}")
    return kinds


def main() -> None:
    defaults = Options()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=defaults.seconds)
    parser.add_argument("--rate", type=float, default=defaults.rate, help="frontend requests/s")
    parser.add_argument("--every", type=float, default=defaults.every,
                        help="seconds between disruptions")  # fmt: skip
    parser.add_argument("--churn-ms", type=float, default=defaults.churn_period * 1000,
                        help="milliseconds between config changes (0: none)")  # fmt: skip
    parser.add_argument("--kinds", help="the disruptions, comma-separated (default: all; "
                        "'none'): controlplane, drain, sidecar, netem")  # fmt: skip
    parser.add_argument("--pods", action="store_true", help="replicas in network namespaces "
                        "(root, ip, iptables, tc) and link delay and loss")  # fmt: skip
    parser.add_argument("--work", type=Path, default=defaults.work,
                        help="where the mesh's state and logs, the outcomes and the table go")  # fmt: skip
    args = parser.parse_args()
    if args.pods and os.geteuid() != 0:
        sys.exit("error: --pods needs root (network namespaces, iptables, tc netem)")
    if args.pods and not shutil.which("tc"):
        sys.exit("error: --pods needs tc (Debian: iproute2)")
    if args.kinds and "netem" in args.kinds and not args.pods:
        sys.exit("error: --kinds netem needs --pods (a pod's link to impair)")
    if args.seconds < 60:
        sys.exit("error: --seconds: at least 60 (a warm-up, three disruptions, a tail)")
    options = Options(seconds=args.seconds, rate=args.rate, every=args.every,
                      churn_period=args.churn_ms / 1000, pods=args.pods, work=args.work,
                      kinds=_kinds(args.kinds, parser))  # fmt: skip
    for previous in ("state", "config"):  # a previous run's, and only the soak's own entries
        shutil.rmtree(options.work / previous, ignore_errors=True)
    options.work.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    soak = Soak(options)
    soaked = None
    try:
        soak.start_mesh()
        soaked = asyncio.run(soak.run())
    except KeyboardInterrupt:
        print("soak: interrupted", flush=True)
    finally:
        left = soak.stop_mesh()
        print(f"== processes of the mesh left: {len(left) or 'none'}", flush=True)
    if soaked is None:
        sys.exit(1)
    soaked.left = left
    save(soaked, options.work)
    table = render(soaked)
    (options.work / "report.md").write_text(table + "\n")
    print()
    print(table)
    print(f"\n(the table, the outcomes and the mesh's logs: {options.work})")


if __name__ == "__main__":
    main()
