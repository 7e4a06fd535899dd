"""``python -m fuzz [--seconds N] [TARGET ...]``: run each target (all by default) for N
seconds, one after the other, and print the executions of each; exit 1 if any found a
failing input (saved under fuzz/crashes/<target>/). ``make fuzz`` runs this with
FUZZ_SECONDS (300 by default)."""

from __future__ import annotations

import argparse
import sys

from fuzz.support.campaign import run_target
from fuzz.support.runner import TARGETS, crashes


def main() -> int:
    """Run the campaign; the exit status says whether every target came through."""
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("--seconds", type=int, default=300, help="per target (default 300)")
    parser.add_argument("targets", nargs="*", help=f"some of: {', '.join(TARGETS)}")
    args = parser.parse_args()
    unknown = set(args.targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets {sorted(unknown)}; targets: {', '.join(TARGETS)}")
    failed = False
    print(f"{'target':<15} {'executions':>11} {'seconds':>8} {'exec/s':>8}  outcome", flush=True)
    for target in args.targets or TARGETS:
        outcome = run_target(target, args.seconds, artifacts=crashes(target))
        verdict = "ok" if outcome.ok else f"FAILED: {outcome.artifact or outcome.returncode}"
        if outcome.pending:
            verdict += f" (pending checks hit: {', '.join(outcome.pending)})"
        print(
            f"{target:<15} {outcome.executions:>11,} {outcome.seconds:>8} "
            f"{outcome.rate:>8.0f}  {verdict}",
            flush=True,
        )
        if not outcome.ok:
            failed = True
            print(outcome.report(), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
