"""Per-node status for ``tulle proxy-status`` and what each node was sent for
``tulle proxy-config``: read from the ADS server's live sessions."""

from __future__ import annotations

from typing import Any

from tulle.control.translate import Resources
from tulle.control.translate.grpc_server import server_modes
from tulle.xds.server import Connection, serialize, to_json
from tulle.xds.types import LISTENER, SHORT_NAMES


def node_status(connection: Connection, resources: Resources) -> dict[str, Any]:
    """One node: identity, and per type the sent and ACKed versions, whether it is current, and
    the last NACK."""
    types: dict[str, Any] = {}
    for type_url, state in connection.session.types.items():
        available = resources.get(type_url, {})
        desired = connection.session.desired_version(type_url, available, serialize)
        current = (
            state.acked_version is not None
            and state.acked_version == state.sent_version == desired
            and state.nack is None
        )
        types[SHORT_NAMES.get(type_url, type_url)] = {
            "sent": state.sent_version,
            "acked": state.acked_version,
            "current": current,
            "resources": len(state.sent),
            "nack": state.nack,
        }
    status: dict[str, Any] = {
        "node": connection.node.id,
        "mode": connection.node.mode,
        "namespace": connection.node.namespace,
        "peer": connection.peer,
        "secure": connection.secure,  # over TLS, with a proven identity
        "connected_at": connection.connected_at,
        "node_error": connection.node_error,
        "types": types,
    }
    if connection.node.mode == "proxyless":
        # A grpcio server's mTLS per address it listens on, as its Listener was sent: STRICT or
        # DISABLE (gRPC servers cannot be PERMISSIVE, gRFC A36); none for a client.
        listeners = connection.session.types.get(LISTENER)
        status["serverMtls"] = server_modes(dict(listeners.sent)) if listeners else {}
    return status


def sent_config(connection: Connection, type_url: str) -> list[dict[str, Any]]:
    """What ``connection`` was last sent of ``type_url``, as protobuf JSON."""
    state = connection.session.types.get(type_url)
    if state is None:
        return []
    return [to_json(resource) for _, resource in state.sent]
