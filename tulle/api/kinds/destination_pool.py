"""Connection settings of a DestinationRule that shape the upstream connections themselves:
TCP keepalive (``connectionPool.tcp.tcpKeepalive``), HTTP/2 PINGs
(``connectionPool.http.http2KeepAlive``) and slow start (``loadBalancer.warmup``).

Field names and defaults follow Istio's DestinationRule reference; the limits are those of what
carries them (Linux's TCP keepalive socket options, Envoy's slow start), so a value that would
fail there is refused here with the field named."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import Field, field_validator

from tulle.api.durations import parse_duration
from tulle.api.kinds.base import PositiveDuration, Strict

# Linux refuses TCP_KEEPIDLE and TCP_KEEPINTVL outside 1..32767 seconds, TCP_KEEPCNT above 127.
KEEPALIVE_MAX_SECONDS: Final = 32767
KEEPALIVE_MAX_PROBES: Final = 127


def keepalive_seconds(text: str) -> int:
    """A TCP keepalive duration in whole seconds, as Istio sends it to Envoy (rounded down)."""
    return int(parse_duration(text))


class TcpKeepalive(Strict):
    """SO_KEEPALIVE on upstream connections; ``time`` (idle before the first probe),
    ``interval`` (between probes) and ``probes`` (unanswered before the connection is dropped)
    override the OS defaults (Linux: 7200s, 75s, 9)."""

    probes: Annotated[int, Field(ge=1, le=KEEPALIVE_MAX_PROBES)] | None = None
    time: str | None = None
    interval: str | None = None

    @field_validator("time", "interval")
    @classmethod
    def _whole_seconds(cls, value: str) -> str:
        seconds = keepalive_seconds(value)
        if not 1 <= seconds <= KEEPALIVE_MAX_SECONDS:
            raise ValueError(
                f"{value!r}: TCP keepalive counts whole seconds, from 1s to "
                f"{KEEPALIVE_MAX_SECONDS}s (what Linux accepts)"
            )
        return value


class ConnectionKeepalive(Strict):
    """HTTP/2 PINGs on upstream HTTP/2 connections (Envoy's ``connection_keepalive``): one
    every ``interval``; a connection whose PING is not acknowledged within ``timeout`` is
    closed."""

    interval: PositiveDuration
    timeout: PositiveDuration


class WarmupConfiguration(Strict):
    """Slow start: a new endpoint's weight ramps up over ``duration``, from ``minimumPercent``
    of its weight, faster with a larger ``aggression`` (Envoy's ``slow_start_config``:
    weight x max(minimumPercent/100, (age / duration) ^ (1 / aggression)))."""

    duration: PositiveDuration
    minimum_percent: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    aggression: Annotated[float, Field(ge=1.0)] | None = None


__all__ = ["ConnectionKeepalive", "TcpKeepalive", "WarmupConfiguration", "keepalive_seconds"]
