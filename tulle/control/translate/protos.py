"""Small helpers to build protobuf values."""

from __future__ import annotations

from typing import Any

from envoy.config.core.v3 import config_source_pb2
from envoy.type.v3 import percent_pb2
from google.protobuf import any_pb2, duration_pb2, wrappers_pb2


def duration(seconds: float) -> Any:
    """A ``google.protobuf.Duration``."""
    value = duration_pb2.Duration()
    value.FromNanoseconds(round(seconds * 1e9))
    return value


def uint32(value: int) -> Any:
    """A ``google.protobuf.UInt32Value``."""
    return wrappers_pb2.UInt32Value(value=value)


def pack(message: Any) -> Any:
    """A message packed into ``google.protobuf.Any``."""
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def fraction(percent: float) -> Any:
    """A percentage (0-100, float) as a FractionalPercent per million."""
    return percent_pb2.FractionalPercent(
        numerator=round(percent * 10_000),
        denominator=percent_pb2.FractionalPercent.MILLION,
    )


def ads() -> Any:
    """A ConfigSource that says: over the same ADS stream, v3."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.V3,
    )
