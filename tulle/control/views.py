"""What the dashboard's pages show, as JSON, from the control plane's state and the traffic
figures (pure functions: data in, data out).

The service graph follows Kiali's choice of reporter: an edge's figures are the callee's
(``reporter="destination"``: every attempt that reached it, retries included, so a failing
replica shows even when retries hide it from the caller) when the callee reports, and the
caller's (``reporter="source"``) for callees that do not (a library-mode app serves without the
mesh on its inbound side) or for callers outside the mesh; the caller's view is kept on each
edge too (``client``), with the mesh's own failures (faults, open circuits, no endpoint) that
never reached the callee."""

from __future__ import annotations

import collections
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tulle.control.registry import Endpoint
from tulle.control.telemetry import Delta
from tulle.obs.scrape import UNKNOWN, Counts, Rates, rates, short_host

DEGRADED = 0.5
"""An edge is drawn degraded when a replica behind it answered less than this share of its
requests in the window (at least 3), or when its caller ejects one of them."""

OUTSIDE = "unknown"
"""The node of callers outside the mesh (a browser, a load generator)."""


def _figures(figures: Rates) -> dict[str, Any]:
    return {
        "rps": round(figures.rps, 3),
        "success": None if figures.success is None else round(figures.success, 4),
        "p50": None if figures.p50 is None else round(figures.p50, 2),
        "p99": None if figures.p99 is None else round(figures.p99, 2),
        "mtls": None if figures.mtls is None else round(figures.mtls, 3),
        "requests": figures.requests,
    }


def workloads_of(endpoints: Iterable[Endpoint]) -> dict[str, dict[str, str]]:
    """Workload → its service and version (the ``version`` label), from the registry."""
    found: dict[str, dict[str, str]] = {}
    for endpoint in endpoints:
        name = endpoint.workload or short_host(endpoint.service)
        version = dict(endpoint.labels).get("version", "")
        found.setdefault(name, {"service": short_host(endpoint.service), "version": version})
    return found


def graph(delta: Delta, endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    """Nodes (a workload: a service's version) and edges (calls, with their figures over the
    delta's span). Every registered workload is a node, called or not."""
    known = workloads_of(endpoints)
    reported: dict[tuple[str, str, str], dict[str, Counts]] = collections.defaultdict(dict)
    for (reporter, source, service, workload), counts in delta.edges.items():
        reported[(source, service, workload)][reporter] = counts
    nodes: dict[str, dict[str, Any]] = {}
    for name, facts in known.items():
        nodes[name] = {"id": name, "service": facts["service"], "version": facts["version"]}
    edges = []
    for (source, service, callee), views in sorted(reported.items()):
        serving, calling = views.get("destination"), views.get("source")
        chosen = serving if serving is not None else calling
        if chosen is None:
            continue
        # UNKNOWN: no endpoint answered (none, or the mesh failed the call first)
        workload = (service or UNKNOWN) if callee == UNKNOWN else callee
        for name, host in ((source, ""), (workload, service)):
            if name not in nodes:
                outside = name == OUTSIDE
                nodes[name] = {
                    "id": name,
                    "service": OUTSIDE if outside else host or name,
                    "version": "",
                    "outside": outside,
                }
        edge: dict[str, Any] = {
            "id": f"{source}->{workload}",
            "source": source,
            "target": workload,
            "service": service,
            "reporter": "destination" if serving is not None else "source",
            **_figures(rates(None, chosen, delta.seconds)),
        }
        if calling is not None:
            edge["client"] = _figures(rates(None, calling, delta.seconds))
        edge["replicas"] = _replicas(delta, (source, service, callee))
        edge["ejected"] = _ejected(delta, source, service)
        edge["degraded"] = bool(edge["ejected"]) or any(
            r["success"] is not None and r["success"] < DEGRADED and r["requests"] >= 3
            for r in edge["replicas"]
        )
        edges.append(edge)
    _merge_duplicates(edges)
    return {
        "span": delta.seconds,  # what the readings cover (less, just after a start)
        "at": delta.at,
        "nodes": sorted(nodes.values(), key=lambda n: (n["service"], n["id"])),
        "edges": edges,
    }


def _ejected(delta: Delta, caller: str, service: str) -> list[str]:
    """The endpoints of ``service`` the caller's outlier detection ejects now (a replica's
    name where it is known)."""
    out: set[str] = set()
    for (who, cluster), facts in delta.clusters.items():
        if who == caller and _cluster_service(cluster) == service:
            out.update(delta.names.get(address, address) for address in facts.ejected)
    return sorted(out)


def _replicas(delta: Delta, edge: tuple[str, str, str]) -> list[dict[str, Any]]:
    """What each replica behind an edge served it, worst first: one failing replica shows
    here while the edge's total (and, past retries, its caller) hardly moves."""
    rows = []
    for (source, service, workload, replica), counts in delta.replicas.items():
        if (source, service, workload) == edge:
            figures = rates(None, counts, delta.seconds)
            rows.append({"replica": replica, "rps": round(figures.rps, 3),
                         "success": figures.success, "requests": counts.requests})  # fmt: skip
    return sorted(
        rows, key=lambda r: (r["success"] if r["success"] is not None else 1, r["replica"])
    )


def _merge_duplicates(edges: list[dict[str, Any]]) -> None:
    """Edges are per (caller, callee workload); one caller may reach one workload under two
    service names (its host and an alias): keep the busier."""
    seen: dict[str, dict[str, Any]] = {}
    for edge in list(edges):
        other = seen.get(edge["id"])
        if other is None:
            seen[edge["id"]] = edge
            continue
        edges.remove(edge if edge["rps"] <= other["rps"] else other)
        if edge["rps"] > other["rps"]:
            seen[edge["id"]] = edge


def service_traffic(
    service: str, workloads: set[str], series: Sequence[Delta]
) -> list[dict[str, Any]]:
    """Per slice of time: requests/s and success rate into the service (as its callers saw
    them) and out of its workloads (their calls)."""
    points = []
    for delta in series:
        inbound, outbound = Counts(), Counts()
        for (reporter, source, host, _), counts in delta.edges.items():
            if reporter != "source":
                continue
            if host == service:
                inbound.add(counts)
            if source in workloads:
                outbound.add(counts)
        into, out = rates(None, inbound, delta.seconds), rates(None, outbound, delta.seconds)
        points.append(
            {
                "at": delta.at,
                "inbound": {"rps": round(into.rps, 3), "success": into.success},
                "outbound": {"rps": round(out.rps, 3), "success": out.success},
            }
        )
    return points


def split(service: str, delta: Delta) -> dict[str, float]:
    """The share of the service's requests each of its workloads served (callers' view)."""
    served: dict[str, float] = collections.defaultdict(float)
    for (reporter, _, host, workload), counts in delta.edges.items():
        if reporter == "source" and host == service:
            served[workload] += counts.requests
    total = sum(served.values())
    return {w: round(n / total, 4) for w, n in sorted(served.items())} if total else {}


def endpoint_rows(
    service: str, endpoints: Sequence[Endpoint], delta: Delta
) -> list[dict[str, Any]]:
    """The service's endpoints: where, which workload, registered health, and which callers'
    outlier detection ejects each now."""
    ejected_by: dict[str, list[str]] = collections.defaultdict(list)
    for (caller, cluster), facts in delta.clusters.items():
        if _cluster_service(cluster) == service:
            for address in facts.ejected:
                ejected_by[address].append(caller)
    rows = []
    for endpoint in endpoints:
        if short_host(endpoint.service) != service:
            continue
        address = f"{endpoint.address}:{endpoint.port}"
        rows.append(
            {
                "address": address,
                "replica": delta.names.get(address, ""),
                "workload": endpoint.workload,
                "version": dict(endpoint.labels).get("version", ""),
                "healthy": endpoint.healthy,
                "ejected_by": sorted(set(ejected_by.get(address, []))),
            }
        )
    return sorted(rows, key=lambda r: (r["workload"], r["address"]))


def cluster_rows(service: str, delta: Delta) -> list[dict[str, Any]]:
    """Each caller's cluster of the service that has something to say: endpoints ejected now,
    ejections and breaker overflows so far."""
    rows = []
    for (caller, cluster), facts in sorted(delta.clusters.items()):
        if _cluster_service(cluster) == service and (
            facts.ejected or facts.ejections or facts.overflows
        ):
            rows.append(
                {
                    "caller": caller,
                    "cluster": cluster,
                    "ejected": sorted(facts.ejected),
                    "ejections": facts.ejections,
                    "overflows": facts.overflows,
                }
            )
    return rows


def _cluster_service(cluster: str) -> str:
    """``outbound|8080|v1|catalog.default.svc.cluster.local`` → ``catalog``."""
    return short_host(cluster.rsplit("|", 1)[-1])


def applies_to(service: str, resource: Mapping[str, Any]) -> bool:
    """Whether a resource (as applied, JSON) concerns the service: it names it as a host, a
    parent or a backend, or selects its ``app`` label, or is a Workload of it."""
    spec = resource.get("spec") or {}
    kind, name = resource.get("kind"), (resource.get("metadata") or {}).get("name")
    hosts: list[str] = []
    for key in ("host", "hosts"):
        value = spec.get(key)
        hosts += value if isinstance(value, list) else [value] if isinstance(value, str) else []
    for ref in spec.get("parentRefs") or []:
        hosts.append(str(ref.get("name", "")))
    target = spec.get("to") or {}
    if isinstance(target, dict) and "host" in target:
        hosts.append(str(target["host"]))
    if kind == "Workload":
        hosts.append(str(spec.get("service") or name))
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    if selector.get("app") == service:
        return True
    return any(short_host(h) == service or h.split(".", 1)[0] == service for h in hosts if h)
