"""Why the mesh itself answered a request: a reason a person can read, and Envoy's response flag.

Every response the mesh produces carries ``x-tulle-error: <reason>``; the access log records the
flag and the reason."""

from __future__ import annotations

from dataclasses import dataclass

ERROR_HEADER = "x-tulle-error"


@dataclass(frozen=True)
class MeshError:
    """A response the mesh produced instead of (or after) the upstream's."""

    status: int
    flag: str
    reason: str


def no_route(authority: str, path: str) -> MeshError:
    """NR: nothing in the route table matches."""
    return MeshError(404, "NR", f"no route for {authority}{path}")


def no_healthy_endpoint(cluster: str) -> MeshError:
    """UH: every endpoint is unhealthy or ejected, or there is none."""
    return MeshError(503, "UH", f"no healthy endpoint (cluster {cluster})")


def circuit_open(cluster: str, limit: str, value: int) -> MeshError:
    """UO: a circuit-breaker limit is reached."""
    return MeshError(503, "UO", f"circuit open: {limit} {value} reached (cluster {cluster})")


def upstream_failure(kind: str, address: str, cluster: str) -> MeshError:
    """UF / UC / UT: the upstream could not be reached, reset, or did not answer in time."""
    flag = {"connect": "UF", "reset": "UC", "timeout": "UT"}.get(kind.split(maxsplit=1)[0], "UF")
    status = 504 if flag == "UT" else 503
    return MeshError(status, flag, f"upstream {kind} {address} (cluster {cluster})")


def downstream_failure(reason: str) -> MeshError:
    """DPE: the client's own request failed while it was being sent (its body was malformed,
    or the client went away mid-body): not the endpoint's fault, never retried."""
    return MeshError(400, "DPE", f"bad request: {reason}")


def request_timeout(seconds: float, cluster: str, grpc_deadline: bool = False) -> MeshError:
    """UT: the route's timeout expired, or the gRPC client's deadline (``grpc-timeout``)."""
    what = "grpc-timeout" if grpc_deadline else "request timeout"
    return MeshError(504, "UT", f"{what} {seconds:g}s exceeded (cluster {cluster})")


def fault_abort(status: int) -> MeshError:
    """FI: an injected abort."""
    return MeshError(status, "FI", "fault injected: abort")


def rate_limited(policy: str, status: int) -> MeshError:
    """RL: the local rate limit's bucket is empty."""
    return MeshError(status, "RL", f"rate limited by {policy}")


def denied(policy: str) -> MeshError:
    """RBAC: an authorization policy denied the request."""
    return MeshError(403, "RBAC", f"denied by policy {policy}")


def no_cluster(cluster: str) -> MeshError:
    """NC: the route names a cluster the proxy does not know (yet)."""
    return MeshError(503, "NC", f"unknown cluster {cluster}")
