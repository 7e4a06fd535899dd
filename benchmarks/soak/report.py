"""The soak's table: requests sent, failures by disruption window and reason, latency, the
config churn, RSS and open files of every process at start and end, restarts, and each target
checked. Markdown, so a run's output can go into the README as it is."""

from __future__ import annotations

import collections
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from benchmarks.soak.churn import ChurnCounts
from benchmarks.soak.disruptions import Window
from benchmarks.soak.load import Outcome
from benchmarks.soak.processes import LOADER, MACHINE, Usage
from tulle.local.state import MeshState

SETTLE = 2.0  # seconds after a window during which its after-effects still count as its own
STEADY = "none (steady, under config churn)"
# Growth over the run (a line fitted through the samples) past both limits reads as a leak:
# more than 2 MB and 5 % of RSS, more than 20 and 50 % of open files.
RSS_GROWTH_MB, FILES_GROWTH = 2.0, 20
KINDS = {
    "controlplane": "control plane killed",
    "drain": "replica drained (SIGTERM)",
    "sidecar": "sidecar killed (SIGKILL)",
    "netem": "link delay and loss",
}


@dataclass
class Soaked:
    """Everything one soak run measured."""

    conditions: list[str]
    began: float  # monotonic time the load began
    outcomes: list[Outcome]
    windows: list[Window]
    churn: ChurnCounts
    samples: dict[str, list[Usage]]  # per process name, every few seconds from the warm-up on
    mesh: MeshState | None  # the final state: restarts
    left: list[tuple[int, str]] = field(default_factory=list)  # processes alive after the run


def window_of(outcome: Outcome, windows: Sequence[Window]) -> str:
    """The kind of the disruption window ``outcome`` overlapped (with its settle time)."""
    for window in windows:
        if outcome.due <= window.end + SETTLE and outcome.done >= window.start:
            return window.kind
    return "none"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.1f} ms"


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    # A reason names clusters such as outbound|8080||catalog...: its bars must not split the cell.
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def render(run: Soaked) -> str:
    lines = ["## Soak", "", *[f"- {c}" for c in run.conditions], ""]
    for part in (_requests, _failures, _disruptions, _churn_of, _processes, _targets):
        lines += [*part(run), ""]
    return "\n".join(lines)


def _churn_of(run: Soaked) -> list[str]:
    return _churn(run.churn)


def _requests(run: Soaked) -> list[str]:
    outcomes = run.outcomes
    failed = [o for o in outcomes if o.status != 200]
    steady = [o.latency for o in outcomes if window_of(o, run.windows) == "none"]
    all_latency = [o.latency for o in outcomes]
    rows = [
        ("requests sent", f"{len(outcomes):,}"),
        ("answered 200", f"{len(outcomes) - len(failed):,}"),
        ("failed", f"{len(failed):,} ({len(failed) / max(1, len(outcomes)):.3%})"),
        ("latency p50 / p99 / max, all", f"{_ms(percentile(all_latency, 0.5))} / "
         f"{_ms(percentile(all_latency, 0.99))} / {_ms(max(all_latency, default=0))}"),
        ("latency p50 / p99, outside windows", f"{_ms(percentile(steady, 0.5))} / "
         f"{_ms(percentile(steady, 0.99))}"),
        ("CPU of the mesh's processes (about)", _cpu(run)),
        ("CPU of the whole machine (others' work too)", _machine(run)),
    ]  # fmt: skip
    return ["### Requests (latency from when each was due)", "", *_table(("", ""), rows)]


def _cpu(run: Soaked) -> str:
    """The CPU the mesh's processes used between the first and last samples, per request sent
    then and as cores busy (a process that lived between two samples is missed)."""
    used: dict[int, tuple[float, float]] = {}
    times = []
    mesh = [u for name, seen in run.samples.items() if name not in (LOADER, MACHINE) for u in seen]
    for usage in mesh:
        low, high = used.get(usage.pid, (usage.cpu, usage.cpu))
        used[usage.pid] = (min(low, usage.cpu), max(high, usage.cpu))
        times.append(usage.at)
    if not times or max(times) <= min(times):
        return "-"
    cpu = sum(high - low for low, high in used.values())
    span = max(times) - min(times)
    requests = sum(1 for o in run.outcomes if min(times) <= o.due <= max(times))
    return f"{cpu / span:.2f} cores, {cpu / max(1, requests) * 1000:.1f} ms per request"


def _machine(run: Soaked) -> str:
    seen = run.samples.get(MACHINE, [])
    if len(seen) < 2 or seen[-1].at <= seen[0].at:
        return "-"
    return f"{(seen[-1].cpu - seen[0].cpu) / (seen[-1].at - seen[0].at):.2f} cores busy"


def cpu_share(seen: Sequence[Usage]) -> float:
    """Cores a process name kept busy on average (its pids summed) over its samples."""
    spans: dict[int, tuple[float, float]] = {}
    for u in seen:
        low, high = spans.get(u.pid, (u.cpu, u.cpu))
        spans[u.pid] = (min(low, u.cpu), max(high, u.cpu))
    elapsed = seen[-1].at - seen[0].at
    return sum(high - low for low, high in spans.values()) / elapsed if elapsed > 0 else 0.0


def _failures(run: Soaked) -> list[str]:
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    for outcome in run.outcomes:
        if outcome.status != 200:
            reason = outcome.reason or f"HTTP {outcome.status}"
            counts[(window_of(outcome, run.windows), f"{outcome.status} {reason}")] += 1
    rows = [(KINDS.get(kind, STEADY), reason[:160], count)
            for (kind, reason), count in sorted(counts.items(), key=lambda i: (i[0][0], -i[1]))]  # fmt: skip
    if not rows:
        rows = [("—", "no request failed", 0)]
    return ["### Failed requests by window and reason", "",
            *_table(("window", "status and reason", "requests"), rows)]  # fmt: skip


def _disruptions(run: Soaked) -> list[str]:
    failed: collections.Counter[int] = collections.Counter()
    sent: collections.Counter[int] = collections.Counter()
    for outcome in run.outcomes:
        for index, window in enumerate(run.windows):
            if outcome.due <= window.end + SETTLE and outcome.done >= window.start:
                sent[index] += 1
                failed[index] += outcome.status != 200
                break
    by_kind: dict[str, list[int]] = collections.defaultdict(list)
    for index, window in enumerate(run.windows):
        by_kind[window.kind].append(index)
    rows = []
    for kind, indexes in by_kind.items():
        seconds = [run.windows[i].seconds for i in indexes]
        rows.append((KINDS[kind], len(indexes), f"{statistics.mean(seconds):.1f} s",
                     f"{max(seconds):.1f} s", sum(sent[i] for i in indexes),
                     sum(failed[i] for i in indexes)))  # fmt: skip
    lines = ["### Disruptions (window: from the act until it was over; plus "
             f"{SETTLE:g} s)", "",
             *_table(("disruption", "times", "mean window", "longest", "requests in windows",
                      "failed"), rows),
             "", "Each one:", ""]  # fmt: skip
    for index, window in enumerate(run.windows):
        lines.append(f"- t={window.start - run.began:6.1f} s  {window.kind:<12} "
                     f"{window.target:<16} {window.note}; {failed[index]} of {sent[index]} "
                     "failed")  # fmt: skip
    return lines


def _churn(churn: ChurnCounts) -> list[str]:
    failed = ", ".join(f"{n} {reason}" for reason, n in churn.failed.most_common()) or "none"
    rows = [
        ("applies accepted", f"{churn.accepted:,}"),
        ("applies failed", failed),
        ("apply time p50 / p99", f"{_ms(percentile(churn.seconds, 0.5))} / "
         f"{_ms(percentile(churn.seconds, 0.99))}"),
    ]  # fmt: skip
    return ["### Config churn (catalog split 90/10 ↔ 80/20 over the API)", "",
            *_table(("", ""), rows)]  # fmt: skip


def _restarts(mesh: MeshState | None) -> dict[str, str]:
    if mesh is None:
        return {}
    found = {"controlplane": str(mesh.control_plane_restarts)}
    for replica in mesh.replicas:
        text = str(replica.restarts) + (f" ({replica.last_exit})" if replica.last_exit else "")
        found[f"{replica.replica}/app"] = found[f"{replica.replica}/sidecar"] = text
    return found


def _processes(run: Soaked) -> list[str]:
    restarts = _restarts(run.mesh)
    rows = []
    for name in sorted(set(run.samples) - {MACHINE}, key=_order):
        seen = run.samples[name]
        first, last = seen[0], seen[-1]
        pids = str(first.pid) if first.pid == last.pid else f"{first.pid} → {last.pid}"
        trend = f"{growth(seen)[0]:+.1f}" if throughout(name, seen) else "-"
        rows.append((name, pids, f"{first.rss_mb:.1f}", f"{last.rss_mb:.1f}",
                     f"{max(u.rss_mb for u in seen):.1f}", trend, first.files, last.files,
                     max(u.files for u in seen), f"{cpu_share(seen):.0%}",
                     restarts.get(name, "0")))  # fmt: skip
    return ["### Processes (start: after the warm-up; end: before the load stopped; → a new "
            "process; trend: RSS gained over the run by a line fitted through the samples, for "
            "a process that ran throughout)", "",
            *_table(("process", "pid", "RSS MB start", "RSS MB end", "RSS MB max", "RSS MB trend",
                     "open files start", "open files end", "open files max", "CPU (of a core)",
                     "restarts"),
                    rows)]  # fmt: skip


def growth(samples: Sequence[Usage]) -> tuple[float, float]:
    """RSS (MB) and open files gained over the samples' span, read from a least-squares line
    through them: a leak climbs steadily, while one sample's files come and go with the load."""
    times = [u.at for u in samples]
    span = times[-1] - times[0]
    rss = statistics.linear_regression(times, [u.rss_mb for u in samples]).slope
    files = statistics.linear_regression(times, [float(u.files) for u in samples]).slope
    return rss * span, files * span


def throughout(name: str, seen: Sequence[Usage]) -> bool:
    """Whether a mesh process ran the whole time (a restarted one is no evidence either way)."""
    return len(seen) >= 3 and seen[0].pid == seen[-1].pid and name not in (LOADER, MACHINE)


def leaks(run: Soaked) -> list[str]:
    """Processes that ran throughout and grew past the limits."""
    grown = []
    for name, seen in run.samples.items():
        if not throughout(name, seen):
            continue
        rss, files = growth(seen)
        if rss > RSS_GROWTH_MB and rss > 0.05 * seen[0].rss_mb:
            grown.append(f"{name} RSS +{rss:.1f} MB")
        if files > FILES_GROWTH and files > 0.5 * seen[0].files:
            grown.append(f"{name} open files +{files:.0f}")
    return grown


def _order(name: str) -> tuple[int, str]:
    first = ("runner", "controlplane")
    return (first.index(name) if name in first else 3 if name == LOADER else 2, name)


def has_reason(outcome: Outcome) -> bool:
    """Whether a failure says why in the mesh's words (``x-tulle-error``, or the reason the
    frontend's page gives for a call), not only a status or the client's own error."""
    return not outcome.reason.startswith(("HTTP ", "client", "load generator"))


def _targets(run: Soaked) -> list[str]:
    failed = collections.Counter(window_of(o, run.windows) for o in run.outcomes
                                 if o.status != 200)  # fmt: skip
    bare = sum(1 for o in run.outcomes if o.status != 200 and not has_reason(o)
               and window_of(o, run.windows) == "sidecar")  # fmt: skip
    grown = leaks(run)

    def verdict(ok: bool) -> str:
        return "met" if ok else "**not met**"

    lines = ["### Targets", ""]
    lines.append(f"- 0 requests lost to control-plane outages: {failed['controlplane']} — "
                 f"{verdict(failed['controlplane'] == 0)}")  # fmt: skip
    lines.append(f"- 0 lost to config churn (failures outside every window): {failed['none']} — "
                 f"{verdict(failed['none'] == 0)}")  # fmt: skip
    lines.append(f"- 0 lost to drains: {failed['drain']} — {verdict(failed['drain'] == 0)}")
    lines.append(f"- killed sidecars: failures only while one is down (none outside the "
                 f"windows, above), each with the mesh's reason: {failed['sidecar']} failed, "
                 f"{bare} without a reason — {verdict(bare == 0)}")  # fmt: skip
    if "netem" in failed or any(w.kind == "netem" for w in run.windows):
        lines.append(f"- link delay and loss: {failed['netem']} failed (no target)")
    lines.append(
        "- RSS and open files flat (processes that ran throughout): "
        + (verdict(True) if not grown else f"{verdict(False)}: {', '.join(grown)}")
    )
    lines.append("- every process stopped after the run: "
                 + (verdict(True) if not run.left else
                    f"{verdict(False)}: {run.left}"))  # fmt: skip
    return lines
