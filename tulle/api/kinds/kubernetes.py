"""The one Kubernetes built-in kind Tulle reads from config files: a ``v1`` Service, a host.

Its ``ports`` are checked as Kubernetes checks them (numbers, names, protocols, no field
Kubernetes does not have); the rest of its spec (cluster IPs, session affinity, traffic
policies, load balancer settings) is the cluster's networking, not the mesh's: accepted by name,
not read. How a Service becomes a mesh service is :mod:`tulle.api.kubernetes`'s."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tulle.api.kinds.base import FieldError, Labels, PortNumber, Resource, reject_repeats

TrafficDistribution = Literal["PreferClose", "PreferSameZone", "PreferSameNode"]


class _Kubernetes(BaseModel):
    """Kubernetes field names as they are (already camelCase), unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class KubernetesServicePort(_Kubernetes):
    """A port of a Service (Kubernetes ``ServicePort``)."""

    name: str | None = None
    protocol: Literal["TCP", "UDP", "SCTP"] = "TCP"
    appProtocol: str | None = None  # noqa: N815 - the Kubernetes field names
    port: PortNumber
    targetPort: Annotated[int, Field(ge=1, le=65535)] | str | None = None  # noqa: N815
    nodePort: Annotated[int, Field(ge=1, le=65535)] | None = None  # noqa: N815


class KubernetesServiceSpec(_Kubernetes):
    """A Service's spec: ``ports``, ``selector``, ``type`` and ``trafficDistribution`` are read;
    the others are the cluster's own networking (kube-proxy, load balancers), accepted and not
    read."""

    ports: list[KubernetesServicePort] = Field(default_factory=list)
    selector: Labels | None = None
    type: Literal["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"] = "ClusterIP"
    externalName: str | None = None  # noqa: N815
    clusterIP: Any = None  # noqa: N815
    clusterIPs: Any = None  # noqa: N815
    externalIPs: Any = None  # noqa: N815
    sessionAffinity: Any = None  # noqa: N815
    sessionAffinityConfig: Any = None  # noqa: N815
    loadBalancerIP: Any = None  # noqa: N815
    loadBalancerSourceRanges: Any = None  # noqa: N815
    loadBalancerClass: Any = None  # noqa: N815
    allocateLoadBalancerNodePorts: Any = None  # noqa: N815
    externalTrafficPolicy: Any = None  # noqa: N815
    internalTrafficPolicy: Any = None  # noqa: N815
    healthCheckNodePort: Any = None  # noqa: N815
    publishNotReadyAddresses: Any = None  # noqa: N815
    ipFamilies: Any = None  # noqa: N815
    ipFamilyPolicy: Any = None  # noqa: N815
    # Read (locality-prioritized failover, as Istio 1.24+); PreferSameZone and PreferSameNode
    # are Kubernetes 1.33+ (KEP-3015), PreferClose their deprecated alias of PreferSameZone.
    trafficDistribution: TrafficDistribution | None = None  # noqa: N815

    @model_validator(mode="after")
    def _ports_distinct(self) -> KubernetesServiceSpec:
        # As Kubernetes: with several ports, each has a name, and names are unique; so is each
        # (port, protocol).
        if len(self.ports) > 1:
            for index, port in enumerate(self.ports):
                if not port.name:
                    raise FieldError(
                        ("ports", index, "name"), "a Service with several ports must name each"
                    )
            reject_repeats([p.name for p in self.ports], ("ports",), "name", "port name")
        reject_repeats([f"{p.port}/{p.protocol}" for p in self.ports], ("ports",), "port", "port")
        return self


class KubernetesService(Resource):
    """A Kubernetes Service (``v1``): the host ``<name>.<namespace>.svc.cluster.local``."""

    KIND: ClassVar[str] = "Service"
    GROUP: ClassVar[str] = ""
    VERSIONS: ClassVar[tuple[str, ...]] = ("v1",)

    spec: KubernetesServiceSpec = Field(default_factory=KubernetesServiceSpec)
