"""The network filters of the listeners a workload got over xDS, unpacked: where the data
plane reads the mesh-wide settings the control plane sets alike on each (tracing, the access
log, path normalization)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from tulle.xds.types import HCM_FILTER


def network_filters(
    listeners: Mapping[str, Any], wanted: Mapping[str, type[Any]]
) -> Iterator[tuple[str, Any]]:
    """Each network filter of ``listeners`` whose name ``wanted`` maps to its message type,
    unpacked as that message: ``(listener name, message)``, in the listeners' order."""
    for listener in listeners.values():
        for chain in listener.filter_chains:
            for network_filter in chain.filters:
                kind = wanted.get(network_filter.name)
                if kind is not None:
                    message = kind()
                    network_filter.typed_config.Unpack(message)
                    yield listener.name, message


_MANAGERS: Final[dict[str, type[Any]]] = {HCM_FILTER: hcm.HttpConnectionManager}


def connection_managers(listeners: Mapping[str, Any]) -> Iterator[tuple[str, Any]]:
    """Each HttpConnectionManager of ``listeners``: ``(listener name, manager)``."""
    return network_filters(listeners, _MANAGERS)
