"""The service registry: the endpoints of each service, behind one interface.

Here the local implementation: endpoints registered and deregistered over the HTTP API by whatever
starts a workload, kept in the state store so a restart loses nothing. ServiceEntry endpoints come
from config, not from here. Kubernetes comes later behind the same :class:`ServiceRegistry`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from tulle.api.hosts import fqdn, is_valid_host
from tulle.api.model import Pairs
from tulle.api.names import (
    check_dns_label,
    check_dns_subdomain,
    check_labels,
    check_locality,
    endpoint_address,
)


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
    namespace: str = "default"  # the workload's (its identity's); the service's for a cluster host

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
_FIELDS = frozenset(
    {
        "service", "namespace", "address", "port", "servicePort", "protocol", "labels",
        "serviceAccount", "locality", "healthy", "workload",
    }
)  # fmt: skip
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", dict: "an object"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
        raise RegistrationError(
            f"{name}: must be {_TYPE_NAMES[kind]}, got {_short(value)} ({type(value).__name__})"
        )
    return value


def _checked(name: str, check: Callable[[str], str], value: str) -> str:
    try:
        return check(value)
    except ValueError as error:
        raise RegistrationError(f"{name}: {error}") from None


def _port(data: Mapping[str, Any], name: str, required: bool = False) -> int | None:
    number: int | None = _field(data, name, int, required=required)
    if number is not None and not 1 <= number <= 65535:
        raise RegistrationError(f"{name}: {_short(number)} is not a port number (1-65535)")
    return number


def endpoint_from_dict(data: Mapping[str, Any]) -> Endpoint:
    """Validate a registration (``service``, ``namespace``, ``address``, ``port``, ...).

    Every name is checked as Kubernetes checks it (namespace: a DNS label; service account and
    workload: DNS names; labels: label syntax), the address must be one host's IP address and
    ports must be 1-65535; a RegistrationError names the field."""
    if not isinstance(data, Mapping):
        raise RegistrationError("a registration must be a JSON object")
    unknown = sorted(str(key) for key in set(data) - _FIELDS)
    if unknown:
        raise RegistrationError(
            f"{unknown[0][:60]}: unknown field; known: {', '.join(sorted(_FIELDS))}"
        )
    service = _field(data, "service", str, required=True)
    namespace = _checked("namespace", check_dns_label, _field(data, "namespace", str, "default"))
    address = _checked("address", endpoint_address, _field(data, "address", str, required=True))
    port = _port(data, "port", required=True)
    assert port is not None
    protocol = _field(data, "protocol", str, "HTTP").upper()
    labels = _field(data, "labels", dict, {})
    if not is_valid_host(service.lower()) or "*" in service:
        raise RegistrationError(f"service: {_short(service)} is not a valid host name")
    if protocol not in _PROTOCOLS:
        raise RegistrationError(
            f"protocol: {_short(protocol)} is not one of {', '.join(_PROTOCOLS)}"
        )
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
        raise RegistrationError("labels: keys and values must be strings")
    _checked("labels", check_labels, labels)  # type: ignore[arg-type]
    account = _field(data, "serviceAccount", str, "default")
    locality = _field(data, "locality", str, "")
    workload = _field(data, "workload", str, "")
    return Endpoint(
        service=fqdn(service, namespace),
        address=address,
        port=port,
        service_port=_port(data, "servicePort"),
        protocol=protocol,
        labels=tuple(sorted(labels.items())),
        service_account=_checked("serviceAccount", check_dns_subdomain, account),
        locality=_checked("locality", check_locality, locality) if locality else "",
        healthy=_field(data, "healthy", bool, True),
        workload=_checked("workload", check_dns_subdomain, workload) if workload else "",
        namespace=namespace,
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

    def get(self, endpoint_id: str) -> Endpoint | None:
        """The registered endpoint with that id, if any."""
        return self._endpoints.get(endpoint_id)

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
