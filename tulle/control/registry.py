"""The service registry: the endpoints of each service, behind one interface.

Here the local implementation: endpoints registered and deregistered over the HTTP API by whatever
starts a workload, kept in the state store so a restart loses nothing. ServiceEntry endpoints come
from config, not from here. Kubernetes comes later behind the same :class:`ServiceRegistry`."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tulle.api.hosts import fqdn, is_valid_host
from tulle.api.model import Pairs


class RegistrationError(ValueError):
    """A registration that cannot be accepted; the message names the field."""


@dataclass(frozen=True)
class Endpoint:
    """One instance of a service: where it listens and who it is."""

    service: str
    address: str
    port: int
    service_port: int | None = None
    protocol: str = "HTTP"
    labels: Pairs = ()
    service_account: str = "default"
    locality: str = ""
    healthy: bool = True
    workload: str = ""

    @property
    def id(self) -> str:
        """``service|address:port``: unique within the registry."""
        return f"{self.service}|{self.address}:{self.port}"

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used by the HTTP API and the state store."""
        data = asdict(self)
        data["labels"] = dict(self.labels)
        data["id"] = self.id
        return data


class ServiceRegistry(Protocol):
    """Where the endpoints of the mesh's services come from."""

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every registered endpoint."""
        ...


_PROTOCOLS = ("HTTP", "HTTP2", "GRPC", "TCP")


def _field(
    data: Mapping[str, Any], name: str, kind: type, default: Any = None, required: bool = False
) -> Any:
    if data.get(name) is None:
        if required:
            raise RegistrationError(f"{name}: required field is missing")
        return default
    value = data[name]
    wrong_bool = isinstance(value, bool) and kind is not bool
    if wrong_bool or not isinstance(value, kind):
        raise RegistrationError(f"{name}: must be {kind.__name__}, got {value!r}")
    return value


def endpoint_from_dict(data: Mapping[str, Any]) -> Endpoint:
    """Validate a registration (``service``, ``namespace``, ``address``, ``port``, ...)."""
    if not isinstance(data, Mapping):
        raise RegistrationError("a registration must be a JSON object")
    known = {
        "service", "namespace", "address", "port", "servicePort", "protocol", "labels",
        "serviceAccount", "locality", "healthy", "workload",
    }  # fmt: skip
    unknown = sorted(set(data) - known)
    if unknown:
        raise RegistrationError(f"{unknown[0]}: unknown field; known: {', '.join(sorted(known))}")
    service = _field(data, "service", str, required=True)
    namespace = _field(data, "namespace", str, "default")
    address = _field(data, "address", str, required=True)
    port = _field(data, "port", int, required=True)
    service_port = _field(data, "servicePort", int, 0) or None
    protocol = _field(data, "protocol", str, "HTTP").upper()
    labels = _field(data, "labels", dict, {})
    if not is_valid_host(service.lower()) or "*" in service:
        raise RegistrationError(f"service: {service!r} is not a valid host name")
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise RegistrationError(f"address: {address!r} is not an IP address") from None
    for name, number in (("port", port), ("servicePort", service_port)):
        if number is not None and not 1 <= number <= 65535:
            raise RegistrationError(f"{name}: {number} is not a port number")
    if protocol not in _PROTOCOLS:
        raise RegistrationError(f"protocol: {protocol!r} is not one of {', '.join(_PROTOCOLS)}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise RegistrationError("labels: keys and values must be strings")
    return Endpoint(
        service=fqdn(service, namespace),
        address=address,
        port=port,
        service_port=service_port,
        protocol=protocol,
        labels=tuple(sorted(labels.items())),
        service_account=_field(data, "serviceAccount", str, "default"),
        locality=_field(data, "locality", str, ""),
        healthy=_field(data, "healthy", bool, True),
        workload=_field(data, "workload", str, ""),
    )


class LocalRegistry:
    """Endpoints registered over the HTTP API, persisted by ``save`` and ``delete``."""

    def __init__(
        self,
        initial: tuple[Endpoint, ...] = (),
        save: Callable[[Endpoint], None] | None = None,
        delete: Callable[[str], None] | None = None,
    ) -> None:
        self._endpoints = {endpoint.id: endpoint for endpoint in initial}
        self._save = save
        self._delete = delete

    def endpoints(self) -> tuple[Endpoint, ...]:
        """Every registered endpoint, in registration order."""
        return tuple(self._endpoints.values())

    def register(self, endpoint: Endpoint) -> bool:
        """Add or replace an endpoint; True when something changed."""
        if self._endpoints.get(endpoint.id) == endpoint:
            return False
        self._endpoints[endpoint.id] = endpoint
        if self._save is not None:
            self._save(endpoint)
        return True

    def deregister(self, endpoint_id: str) -> bool:
        """Remove an endpoint by id; True when it was there."""
        if self._endpoints.pop(endpoint_id, None) is None:
            return False
        if self._delete is not None:
            self._delete(endpoint_id)
        return True
