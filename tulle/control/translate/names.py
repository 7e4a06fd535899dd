"""Names of generated resources, shared by every translator (Istio's conventions)."""

from __future__ import annotations


def cluster_name(host: str, port: int, subset: str | None = None) -> str:
    """``outbound|<port>|<subset>|<host>``."""
    return f"outbound|{port}|{subset or ''}|{host}"


def parse_cluster_name(name: str) -> tuple[str, int, str | None]:
    """``(host, port, subset)`` of a cluster name made by :func:`cluster_name`."""
    _, port, subset, host = name.split("|", 3)
    return host, int(port), subset or None


def inbound_cluster_name(port: int) -> str:
    """``inbound|<port>||``: the local app behind a sidecar."""
    return f"inbound|{port}||"


def route_config_name(host: str, port: int) -> str:
    """The RouteConfiguration of one service port: ``<host>:<port>``."""
    return f"{host}:{port}"


HTTP_PROXY_ROUTE = "http_proxy"
"""The RouteConfiguration of the sidecar's HTTP forward-proxy listener: every HTTP service."""

HTTP_PROXY_LISTENER = "http_proxy"
OUTBOUND_LISTENER = "virtualOutbound"
INBOUND_LISTENER = "virtualInbound"


def sni_name(host: str, port: int, subset: str | None = None) -> str:
    """The SNI a client sends to a mesh endpoint, as Istio builds it:
    ``outbound_.<port>_.<subset>_.<host>`` (``outbound_.8080_._.web.default.svc.cluster.local``
    without a subset)."""
    return f"outbound_.{port}_.{subset or ''}_.{host}"
