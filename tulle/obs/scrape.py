"""Reading the mesh's own metrics back (sans-IO): the Prometheus text a sidecar's
``/stats/prometheus`` or a library's ``/metrics`` serves, folded into cumulative counts per
call edge (caller workload → destination service and workload, as each reporter saw it), and
what two such readings say about the time between them (requests/s, success rate, quantiles
from the histogram buckets, as Prometheus' ``rate`` and ``histogram_quantile`` do).

``tulle top`` and the control plane's dashboard data (:mod:`tulle.control.telemetry`) both read
metrics through this module; each does its own I/O."""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field

REQUESTS = "tulle_requests_total"
BUCKETS = "tulle_request_duration_milliseconds_bucket"
EJECTED = "tulle_cluster_endpoint_ejected"
EJECTIONS = "tulle_cluster_outlier_detection_ejections_enforced_total"
OVERFLOWS = "tulle_cluster_circuit_breaker_overflow_total"
UNKNOWN = "unknown"

EdgeKey = tuple[str, str, str, str]
"""(reporter, source workload, destination service (short name), destination workload)."""

ReplicaKey = tuple[str, str, str, str]
"""(source workload, destination service, destination workload, the replica that served)."""


@dataclass
class Counts:
    """Cumulative counts of one edge as one reporter saw it."""

    requests: float = 0.0
    failures: float = 0.0  # 5xx answers and the mesh's own failures
    mtls: float = 0.0  # requests that went over mutual TLS
    buckets: dict[float, float] = field(default_factory=lambda: collections.defaultdict(float))

    def add(self, other: Counts) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.failures += other.failures
        self.mtls += other.mtls
        for bound, count in other.buckets.items():
            self.buckets[bound] += count


@dataclass
class ClusterFacts:
    """One caller's view of one upstream cluster: endpoints ejected now, ejections and
    circuit-breaker overflows so far."""

    ejected: set[str] = field(default_factory=set)
    ejections: float = 0.0
    overflows: float = 0.0


@dataclass
class Reading:
    """Everything read from the mesh at one moment (cumulative since each process started)."""

    edges: dict[EdgeKey, Counts] = field(default_factory=lambda: collections.defaultdict(Counts))
    # What each replica served (its own ``reporter="destination"`` counts), by its page's replica
    replicas: dict[ReplicaKey, Counts] = field(
        default_factory=lambda: collections.defaultdict(Counts)
    )
    clusters: dict[tuple[str, str], ClusterFacts] = field(
        default_factory=lambda: collections.defaultdict(ClusterFacts)
    )  # (caller workload, cluster name)
    names: dict[str, str] = field(default_factory=dict)  # an endpoint's address → its replica
    targets: int = 0  # metric pages read
    failed: list[str] = field(default_factory=list)  # pages that did not answer


@dataclass(frozen=True)
class Rates:
    """What happened on one edge between two readings."""

    rps: float
    success: float | None  # None: no requests
    p50: float | None
    p99: float | None
    mtls: float | None  # share of requests over mTLS; None: no requests
    requests: float = 0.0


def short_host(host: str) -> str:
    """``payment.default.svc.cluster.local`` → ``payment``; other names as they are."""
    suffix = ".svc.cluster.local"
    return host[: -len(suffix)].rsplit(".", 1)[0] if host.endswith(suffix) else host


def parse(text: str, workload: str = "", into: Reading | None = None, replica: str = "") -> Reading:
    """Add one metrics page to ``into`` (a new :class:`Reading` when None). ``workload`` is the
    page's own workload, for its cluster figures (request metrics carry their own labels);
    ``replica`` its replica, for what it served."""
    reading = into if into is not None else Reading()
    reading.targets += 1
    for name, labels, value in samples(text):
        if name in (REQUESTS, BUCKETS):
            key = (
                labels.get("reporter", ""),
                labels.get("source_workload", UNKNOWN) or UNKNOWN,
                short_host(labels.get("destination_service", "")),
                labels.get("destination_workload", UNKNOWN) or UNKNOWN,
            )
            counts = reading.edges[key]
            served = None
            if replica and key[0] == "destination":
                served = reading.replicas[(*key[1:], replica)]
            if name == REQUESTS:
                failed = _failed(labels.get("response_code", ""))
                for into_counts in (counts, served) if served is not None else (counts,):
                    into_counts.requests += value
                    into_counts.failures += value if failed else 0.0
                if _over_mtls(labels):
                    counts.mtls += value
            else:
                counts.buckets[float(labels["le"])] += value
        elif name == EJECTED and value > 0:
            reading.clusters[(workload, labels["cluster_name"])].ejected.add(labels["endpoint"])
        elif name == EJECTIONS:
            reading.clusters[(workload, labels["cluster_name"])].ejections += value
        elif name == OVERFLOWS:
            reading.clusters[(workload, labels["cluster_name"])].overflows += value
    return reading


_WANTED = (REQUESTS + "{", BUCKETS + "{", EJECTED + "{", EJECTIONS + "{", OVERFLOWS + "{")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """The samples of the series this module reads, from the Prometheus text format: (name,
    labels, value). Only those lines are parsed (a sidecar's page is mostly histogram buckets
    and other families; prometheus-client's full parser takes ten times as long), each with a
    regular expression; a line that does not parse raises ValueError naming it."""
    parsed: dict[str, dict[str, str]] = {}  # a histogram's buckets share all labels but le
    for line in text.splitlines():
        if not line.startswith(_WANTED):
            continue
        brace = line.index("{")
        end = line.rfind("}")
        if end < brace:
            raise ValueError(f"not a sample line: {line[:120]!r}")
        inside = line[brace + 1 : end]
        le = _le(inside) if line.startswith(BUCKETS) else None
        common = inside[: le[0]] + inside[le[1] :] if le else inside
        labels = parsed.get(common)
        if labels is None:
            labels = parsed[common] = {k: _unescape(v) for k, v in _LABEL.findall(common)}
        if le is not None:
            labels = {**labels, "le": inside[le[0] + 4 : le[1] - 2]}
        parts = line[end + 1 :].split()
        if not parts:
            raise ValueError(f"no value: {line[:120]!r}")
        yield line[:brace], labels, float(parts[0])


def _le(inside: str) -> tuple[int, int] | None:
    """Where a bucket's ``le="..."`` label is among its labels: (start, end past its comma)."""
    start = inside.find('le="')
    while start > 0 and inside[start - 1] != ",":  # a label whose name ends in "le"
        start = inside.find('le="', start + 1)
    if start < 0:
        return None
    end = inside.find('"', start + 4) + 2  # past the quote and the comma after it
    return start, end


def _unescape(value: str) -> str:
    if "\\" not in value:
        return value
    return value.replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")


def _failed(code: str) -> bool:
    """A 5xx, or no response at all (code 0)."""
    return code.startswith("5") or code in ("0", "")


def _over_mtls(labels: Mapping[str, str]) -> bool:
    """The callee says ``connection_security_policy="mutual_tls"``; the caller names the
    upstream's principal only when the request went over mTLS."""
    if labels.get("reporter") == "destination":
        return labels.get("connection_security_policy") == "mutual_tls"
    return labels.get("destination_principal", UNKNOWN) not in (UNKNOWN, "")


def rates(before: Counts | None, after: Counts, seconds: float) -> Rates:
    """An edge's rates between two readings ``seconds`` apart (a counter that went down, a
    restarted process, counts from zero as Prometheus' ``rate`` does)."""
    then = before if before is not None and before.requests <= after.requests else Counts()
    requests = max(0.0, after.requests - then.requests)
    failures = max(0.0, after.failures - then.failures)
    mtls = max(0.0, after.mtls - then.mtls)
    buckets = {le: after.buckets[le] - then.buckets.get(le, 0.0) for le in after.buckets}
    return Rates(
        requests / seconds if seconds > 0 else 0.0,
        (requests - failures) / requests if requests else None,
        quantile(buckets, 0.5),
        quantile(buckets, 0.99),
        mtls / requests if requests else None,
        requests,
    )


def quantile(buckets: Mapping[float, float], q: float) -> float | None:
    """The ``q`` quantile from cumulative histogram buckets (upper bound → count), linear
    within a bucket, as Prometheus' histogram_quantile."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            inside = count - below
            share = (rank - below) / inside if inside else 0.0
            return lower + (bound - lower) * share
        lower, below = bound, count
    return lower


def by_destination(
    edges: Iterable[tuple[EdgeKey, Counts]], reporter: str
) -> dict[tuple[str, str], Counts]:
    """Counts per (destination service, destination workload) as ``reporter`` saw them,
    summed over every caller."""
    result: dict[tuple[str, str], Counts] = collections.defaultdict(Counts)
    for (seen_by, _, service, workload), counts in edges:
        if seen_by == reporter:
            result[(service, workload)].add(counts)
    return dict(result)
