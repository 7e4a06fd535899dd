"""Istio's ServiceEntry (``networking.istio.io``): services the mesh does not run itself,
their ports, addresses, resolution and static endpoints.

Field names, defaults and meaning follow Istio's reference documentation; only the fields Tulle
implements exist, so a field Tulle would silently ignore is reported as unknown instead."""

from __future__ import annotations

import ipaddress
from typing import Annotated, ClassVar, Literal, get_args

from pydantic import AfterValidator, Field, field_validator, model_validator

from tulle.api.hosts import is_valid_host
from tulle.api.kinds.base import (
    UINT32_MAX,
    FieldError,
    Host,
    Labels,
    PortNumber,
    Strict,
    check_cidrs,
    reject_repeats,
)
from tulle.api.kinds.networking_common import NetworkingResource
from tulle.api.names import check_dns_subdomain, check_locality, endpoint_address

UNIX_PREFIX = "unix://"
"""A ServiceEntry endpoint on a Unix domain socket: ``unix:///var/run/example/socket``."""

# --- ServiceEntry ---------------------------------------------------------------------------

Protocol = Literal[
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "TCP", "TLS", "MONGO", "MYSQL", "REDIS"
]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)
"""Istio's port protocols (``pkg/config/protocol``, case-insensitive) that the mesh carries:
HTTP, HTTP2, GRPC and GRPC-WEB as HTTP; the others as opaque TCP (TLS passes through; the mesh
has no codec for MongoDB, MySQL or Redis), as a Kubernetes Service's port names say."""


class ServicePort(Strict):
    """A port of a ServiceEntry."""

    number: PortNumber
    protocol: str = "TCP"
    name: str | None = None
    target_port: PortNumber | None = None

    @field_validator("protocol")
    @classmethod
    def _known(cls, value: str) -> str:
        upper = value.upper()
        if upper in PROTOCOLS:
            return upper
        if upper == "UDP":
            raise ValueError(
                "UDP is not carried by the mesh (Tulle's proxies carry TCP): leave the port out"
            )
        raise ValueError(f"unknown protocol {value!r}; use one of {', '.join(PROTOCOLS)}")


class WorkloadEntry(Strict):
    """A static endpoint of a ServiceEntry."""

    address: str = Field(min_length=1)
    ports: dict[str, PortNumber] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict)
    weight: Annotated[int, Field(ge=1, le=UINT32_MAX)] | None = None
    locality: Annotated[str, AfterValidator(check_locality)] | None = None
    service_account: Annotated[str, AfterValidator(check_dns_subdomain)] | None = None

    @field_validator("address")
    @classmethod
    def _host_or_address(cls, value: str) -> str:
        """An IP address of one host, a DNS name (resolved with resolution DNS), or a Unix
        domain socket, ``unix:///absolute/path`` (Istio's ``unix://`` prefix)."""
        if value.startswith(UNIX_PREFIX):
            path = value[len(UNIX_PREFIX) :]
            if not path.startswith("/") or "\x00" in path or len(path.encode()) > 107:
                raise ValueError(
                    f"{value!r}: a Unix socket is unix:// and an absolute path (at most 107 bytes)"
                )
            return value
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not is_valid_host(value) or "*" in value:
                raise ValueError(f"{value!r} is neither an IP address nor a DNS name") from None
            return value
        endpoint_address(value)
        return value


class WorkloadSelector(Strict):
    """``workloadSelector: {labels: {...}}``: the workloads that are this service's endpoints."""

    labels: Labels = Field(default_factory=dict)


class ServiceEntrySpec(Strict):
    """Services the mesh should know that no Workload provides: external APIs, VMs, servers."""

    hosts: list[Host] = Field(min_length=1)
    addresses: list[str] = Field(default_factory=list)
    ports: list[ServicePort] = Field(default_factory=list)
    location: Literal["MESH_EXTERNAL", "MESH_INTERNAL"] = "MESH_EXTERNAL"
    resolution: Literal["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN"] = "NONE"
    endpoints: list[WorkloadEntry] = Field(default_factory=list)
    workload_selector: WorkloadSelector | None = None
    export_to: list[str] = Field(default_factory=list)
    subject_alt_names: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)

    _addresses = field_validator("addresses")(check_cidrs)

    @model_validator(mode="after")
    def _consistent(self) -> ServiceEntrySpec:
        if self.endpoints and self.workload_selector is not None:
            raise ValueError("set endpoints or workloadSelector, not both")
        unix = [i for i, e in enumerate(self.endpoints) if e.address.startswith(UNIX_PREFIX)]
        for index in unix:
            if self.resolution != "STATIC":
                raise FieldError(
                    ("endpoints", index, "address"),
                    "a Unix socket endpoint needs resolution STATIC (as in Istio)",
                )
            if self.endpoints[index].ports:
                raise FieldError(
                    ("endpoints", index, "ports"),
                    "a Unix socket endpoint has no ports (as in Istio)",
                )
        if unix and len(self.ports) != 1:
            raise FieldError(("ports",), "exactly 1 port is required with Unix socket endpoints")
        if self.resolution == "STATIC":
            for index, endpoint in enumerate(self.endpoints):
                if index in unix:
                    continue
                try:
                    ipaddress.ip_address(endpoint.address)
                except ValueError:
                    raise FieldError(
                        ("endpoints", index, "address"),
                        f"{endpoint.address!r} must be an IP address with resolution STATIC "
                        "(use resolution DNS for host names)",
                    ) from None
        names = {port.name for port in self.ports if port.name}
        for index, endpoint in enumerate(self.endpoints):
            unknown = sorted(set(endpoint.ports) - names)
            if unknown:
                raise FieldError(
                    ("endpoints", index, "ports", unknown[0]),
                    f"names port {unknown[0]!r}, which spec.ports does not declare",
                )
        reject_repeats([port.number for port in self.ports], ("ports",), "number", "port")
        return self


class ServiceEntry(NetworkingResource):
    """Istio ServiceEntry: adds a service and its endpoints to the mesh's registry."""

    KIND: ClassVar[str] = "ServiceEntry"

    spec: ServiceEntrySpec
