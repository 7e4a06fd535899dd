"""Cross-resource checks of the Kubernetes Services read from files.

A Service is a host (``<name>.<namespace>.svc.cluster.local``). In local mode (``tulle up``) a
service's endpoints come from its Workloads, so a Service of a host a Workload serves must say
what the Workload says: the same ports, with the same protocols, and a selector that selects
it; otherwise the same files would mean one thing under ``tulle up`` and another on
Kubernetes. A Service no Workload serves is a host with no endpoints: calls to it fail with
503 ``no healthy endpoint``, which is said when the files do run Workloads."""

from __future__ import annotations

from collections.abc import Iterator

from tulle.api.check_context import Context, located
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import KubernetesService, Workload
from tulle.api.kinds.kubernetes import KubernetesServicePort
from tulle.api.kubernetes import DEFAULT_PROTOCOL, PROTOCOLS, port_protocol
from tulle.api.loader import Loaded
from tulle.api.model import Service
from tulle.api.normalize import workload_labels

ERROR, WARNING = Severity.ERROR, Severity.WARNING


def protocol_source(port: KubernetesServicePort) -> str:
    """Why a Service port has its protocol: its appProtocol, its name's prefix, or neither."""
    if port.appProtocol is not None and port.appProtocol.lower() in PROTOCOLS:
        return f"appProtocol {port.appProtocol!r}"
    if port.name and port.name.lower().split("-", 1)[0] in PROTOCOLS:
        return f"port name {port.name!r}"
    return f"neither appProtocol nor the port name says, so {DEFAULT_PROTOCOL}"


def _ports_agree(
    service: KubernetesService,
    mapped: Service,
    item: Loaded,
    workloads: list[tuple[Workload, Loaded]],
) -> Iterator[Finding]:
    served: dict[int, tuple[str, Workload, Loaded]] = {}
    for workload, workload_item in workloads:
        for served_port in workload.spec.ports:
            served.setdefault(served_port.port, (served_port.protocol, workload, workload_item))
    names = ", ".join(workload.ref for workload, _ in workloads)
    listed = ", ".join(str(number) for number in sorted(served)) or "none"
    for i, port in enumerate(service.spec.ports):
        protocol = port_protocol(port.model_dump(exclude_none=True))
        if protocol is None:
            continue  # UDP or SCTP: not the mesh's
        found = served.get(port.port)
        if found is None:
            yield item.finding(
                ERROR,
                ("spec", "ports", i, "port"),
                f"port {port.port} of {mapped.host} is not a port of its Workloads ({names}: "
                f"{listed}): under tulle up nothing would serve it",
            )
        elif found[0] != protocol:
            yield item.finding(
                ERROR,
                ("spec", "ports", i),
                f"port {port.port} is {protocol} here ({protocol_source(port)}) but "
                f"{found[0]} in {found[1].ref} at {located(found[2])}: set appProtocol "
                f"{found[0].lower()!r} or name the port {found[0].lower()}-..., or change the "
                "Workload's protocol",
            )
    own = {port.port for port in service.spec.ports}
    missing = sorted(number for number in served if number not in own)
    if missing:
        shown = ", ".join(str(number) for number in missing)
        yield item.finding(
            WARNING,
            ("spec", "ports"),
            f"the Workloads of {mapped.host} ({names}) also serve port {shown}, which this "
            "Service does not have: on Kubernetes, calls to it through the Service would fail",
        )
    selector = service.spec.selector
    if selector and not any(
        selector.items() <= workload_labels(workload).items() for workload, _ in workloads
    ):
        shown = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
        yield item.finding(
            WARNING,
            ("spec", "selector"),
            f"selector {shown} selects none of the Workloads of {mapped.host} ({names}): on "
            "Kubernetes this Service would send its calls to other pods",
        )


def check_kubernetes_services(ctx: Context) -> Iterator[Finding]:
    """A Service agrees with the Workloads of its host (ports, protocols, selector); an
    ExternalName Service, which Tulle does not read, is said to be ignored; under ``tulle up``
    (the files run Workloads), a Service no Workload serves is said to have no endpoints."""
    by_host: dict[str, list[tuple[Workload, Loaded]]] = {}
    for workload, item in ctx.of(Workload):
        host = ctx.resolve(workload.spec.service or workload.name, workload.namespace)
        by_host.setdefault(host, []).append((workload, item))
    for service, mapped, item in ctx.kubernetes:
        if mapped is None:
            alias = service.spec.externalName or "?"
            yield item.finding(
                WARNING,
                ("spec", "type"),
                f"an ExternalName Service (a DNS alias of {alias}) is not supported yet and "
                f"defines no host; to route to {alias}, define it with a ServiceEntry",
            )
            continue
        workloads = by_host.get(mapped.host)
        if workloads:
            yield from _ports_agree(service, mapped, item, workloads)
        elif by_host:
            yield item.finding(
                WARNING,
                ("metadata", "name"),
                f"no Workload serves {mapped.host}: under tulle up it has no endpoints, and "
                "calls to it fail with 503 'no healthy endpoint'",
            )
