"""Normalization of services and workloads: Workloads, Kubernetes Services and ServiceEntries
become the model's :class:`~tulle.api.model.Workload` and :class:`~tulle.api.model.Service`
records (one service per host, its origins merged)."""

from __future__ import annotations

from dataclasses import replace

from tulle.api.durations import parse_duration
from tulle.api.kinds import KubernetesService, ServiceEntry, Workload
from tulle.api.kubernetes import DEFAULT_PROTOCOL, PROTOCOLS, service_of
from tulle.api.model import ReadinessCheck, Service, ServicePort, StaticEndpoint
from tulle.api.model import Workload as WorkloadModel
from tulle.api.model import WorkloadPort as WorkloadPortModel
from tulle.api.normalize_common import HostResolver, export_namespaces, pairs, ref, workload_labels

# --- services and workloads -----------------------------------------------------------------


def mesh_protocol(protocol: str) -> str:
    """A ServiceEntry port's protocol as the mesh carries it: HTTP, HTTP2 and GRPC (GRPC-WEB
    too) as such, HTTPS, TLS, MONGO, MYSQL and REDIS as opaque TCP (the mapping of a Kubernetes
    Service's port names, ``tulle.api.kubernetes.PROTOCOLS``)."""
    return PROTOCOLS.get(protocol.lower(), DEFAULT_PROTOCOL)


def workload_model(workload: Workload, resolve: HostResolver) -> WorkloadModel:
    """The model of a Workload: its service host resolved, its readiness check in seconds."""
    spec = workload.spec
    readiness = None
    if spec.readiness is not None:
        http = spec.readiness.http_get
        check = http or spec.readiness.tcp_socket
        readiness = ReadinessCheck(
            kind="http" if http else "tcp",
            path=http.path if http else None,
            port=check.port if check else None,
            period=parse_duration(spec.readiness.period),
            timeout=parse_duration(spec.readiness.timeout),
        )
    return WorkloadModel(
        name=workload.name,
        namespace=workload.namespace,
        service_host=resolve(spec.service or workload.name, workload.namespace),
        command=tuple(spec.command),
        args=tuple(spec.args),
        env=pairs(spec.env),
        replicas=spec.replicas,
        ports=tuple(WorkloadPortModel(p.name, p.port, p.protocol) for p in spec.ports),
        service_account=spec.service_account or workload.name,
        labels=pairs(workload_labels(workload)),
        mesh=spec.mesh,
        readiness=readiness,
        origin=ref(workload),
        locality=spec.locality or "",
    )


def kubernetes_service(service: KubernetesService) -> Service | None:
    """The mesh service a Kubernetes Service of a file defines (None for ExternalName), as
    tulle.kube maps a cluster's Service."""
    return service_of(service.model_dump(mode="json", exclude_none=True), ref(service))


def mesh_services(
    workloads: list[WorkloadModel],
    kubernetes: list[KubernetesService],
    entries: list[ServiceEntry],
    resolve: HostResolver,
) -> dict[str, Service]:
    """Workloads define services (their versions' ports merged); a Kubernetes Service of a
    host a Workload serves adds only its origin (validation checks that their ports agree),
    of another host defines it, with no endpoints of its own; a ServiceEntry defines its
    hosts (validation refuses one that a Workload or a Kubernetes Service defines; several
    ServiceEntries of one host are merged as Istio does: the first one's service, every one's
    endpoints)."""
    services: dict[str, Service] = {}
    for workload in workloads:
        ports = tuple(ServicePort(p.port, p.protocol, p.name) for p in workload.ports)
        known = services.get(workload.service_host)
        if known is not None:
            services[workload.service_host] = replace(
                known,
                ports=known.ports + tuple(p for p in ports if p not in known.ports),
                origins=(*known.origins, workload.origin),
            )
            continue
        services[workload.service_host] = Service(
            host=workload.service_host,
            namespace=workload.namespace,
            ports=ports,
            location="MESH_INTERNAL",
            resolution="STATIC",
            origins=(workload.origin,),
        )
    for kube in kubernetes:
        service = kubernetes_service(kube)
        if service is None:
            continue
        known = services.get(service.host)
        if known is None:
            services[service.host] = service
        else:
            services[service.host] = replace(known, origins=(*known.origins, *service.origins))
    for entry in entries:
        spec = entry.spec
        endpoints = tuple(
            StaticEndpoint(
                address=e.address,
                ports=tuple(sorted((k, str(v)) for k, v in e.ports.items())),
                labels=pairs(e.labels),
                weight=e.weight or 1,
                locality=e.locality,
                service_account=e.service_account,
            )
            for e in spec.endpoints
        )
        for host in spec.hosts:
            name = resolve(host, entry.namespace)
            known = services.get(name)
            if known is not None and known.origins[0].kind == "ServiceEntry":
                # Istio's merge: the first entry's service stands, every entry's endpoints serve
                services[name] = replace(
                    known,
                    origins=(*known.origins, ref(entry)),
                    endpoints=known.endpoints + endpoints,
                    subject_alt_names=known.subject_alt_names
                    + tuple(n for n in spec.subject_alt_names if n not in known.subject_alt_names),
                )
                continue
            services[name] = Service(
                host=name,
                namespace=entry.namespace,
                ports=tuple(
                    ServicePort(p.number, mesh_protocol(p.protocol), p.name, p.target_port)
                    for p in spec.ports
                ),
                location=spec.location,
                resolution=spec.resolution,
                origins=(ref(entry),),
                addresses=tuple(spec.addresses),
                endpoints=endpoints,
                workload_selector=(
                    pairs(spec.workload_selector.labels) if spec.workload_selector else None
                ),
                export_to=export_namespaces(spec.export_to, entry.namespace),
                subject_alt_names=tuple(spec.subject_alt_names),
            )
    return services
