"""From xDS resources to an :class:`~tulle.engine.outbound.EngineConfig`, all or nothing: a
resource the engine cannot use raises ConfigError naming it, and nothing is swapped in. Each
endpoint's ``tls`` (None: plain text) is decided here, from its cluster's transport sockets."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from tulle.engine.cluster_config import (
    ClusterSpec,
    EndpointSpec,
    compile_cluster,
    compile_endpoints,
)
from tulle.engine.config import RouteTable, compile_route_table
from tulle.engine.matching import ConfigError
from tulle.engine.outbound import EngineConfig
from tulle.engine.tls_config import PLAIN, SocketChoice, socket_choice, with_tls
from tulle.xds import types


def compile_config(
    version: str,
    route_configs: Iterable[Any],
    clusters: Iterable[Any],
    assignments: Iterable[Any],
) -> EngineConfig:
    """Compile RouteConfigurations, Clusters and ClusterLoadAssignments."""
    tables: dict[str, RouteTable] = {}
    for config in route_configs:
        tables[config.name] = compile_route_table(config)
    specs: dict[str, ClusterSpec] = {}
    sockets: dict[str, SocketChoice] = {}
    for cluster in clusters:
        try:
            spec = compile_cluster(cluster)
            choice = socket_choice(cluster)
        except ConfigError as error:
            raise ConfigError(f"cluster {cluster.name!r}: {error}") from None
        # Endpoints come by the EDS service name (the cluster's own unless it names another).
        sockets[cluster.eds_cluster_config.service_name or cluster.name] = choice
        if spec.static_endpoints is not None and choice is not PLAIN:
            spec = replace(spec, static_endpoints=with_tls(spec.static_endpoints, choice))
        specs[cluster.name] = spec
    endpoints: dict[str, tuple[EndpointSpec, ...]] = {}
    for assignment in assignments:
        name = assignment.cluster_name
        endpoints[name] = with_tls(compile_endpoints(assignment), sockets.get(name, PLAIN))
    return EngineConfig(
        version=version,
        route_tables=MappingProxyType(tables),
        clusters=MappingProxyType(specs),
        endpoints=MappingProxyType(endpoints),
    )


def compile_resources(version: str, resources: Mapping[str, Mapping[str, Any]]) -> EngineConfig:
    """Compile a node's resources by type URL (as the xDS client holds them)."""
    return compile_config(
        version,
        resources[types.ROUTE].values(),
        resources[types.CLUSTER].values(),
        resources[types.ENDPOINT].values(),
    )
