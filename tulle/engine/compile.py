"""From xDS resources to an :class:`~tulle.engine.outbound.EngineConfig`, all or nothing: a
resource the engine cannot use raises ConfigError naming it, and nothing is swapped in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from tulle.engine.cluster_config import EndpointSpec, compile_cluster, compile_endpoints
from tulle.engine.config import RouteTable, compile_route_table
from tulle.engine.matching import ConfigError
from tulle.engine.outbound import EngineConfig
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
    specs = {}
    for cluster in clusters:
        try:
            specs[cluster.name] = compile_cluster(cluster)
        except ConfigError as error:
            raise ConfigError(f"cluster {cluster.name!r}: {error}") from None
    endpoints: dict[str, tuple[EndpointSpec, ...]] = {}
    for assignment in assignments:
        endpoints[assignment.cluster_name] = compile_endpoints(assignment)
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
