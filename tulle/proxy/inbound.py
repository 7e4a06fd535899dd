"""Inbound policy from the ``virtualInbound`` listener: per app port, the local rate limit the
control plane put in that port's filter chain."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)

from tulle.engine.config import RATELIMIT_FILTER, bucket
from tulle.engine.ratelimit import TokenBucket

INBOUND_LISTENER = "virtualInbound"


def inbound_buckets(listeners: Mapping[str, Any], now: float) -> dict[int, TokenBucket]:
    """A token bucket per app port that has a local rate limit."""
    listener = listeners.get(INBOUND_LISTENER)
    result: dict[int, TokenBucket] = {}
    if listener is None:
        return result
    for chain in listener.filter_chains:
        port = chain.filter_chain_match.destination_port.value
        for network_filter in chain.filters:
            manager = hcm.HttpConnectionManager()
            if not network_filter.typed_config.Unpack(manager):
                continue
            for http_filter in manager.http_filters:
                if http_filter.name == RATELIMIT_FILTER:
                    spec = bucket(http_filter.typed_config, f"inbound_{port}")
                    if spec is not None:
                        result[port] = TokenBucket(spec, now)
    return result
