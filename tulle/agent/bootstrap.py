"""The ``GRPC_XDS_BOOTSTRAP`` document of a proxyless gRPC app (``tulle bootstrap grpc``).

Secure by default, in the fields grpcio 1.85 reads:

- ``xds_servers[0].channel_creds``: ``tls`` with the mesh's trust bundle (gRFC A65), so grpcio's
  xDS client verifies the control plane's secure port;
- ``xds_servers[0].call_creds``: ``jwt_token_file`` (gRFC A97) naming the token file
  ``tulle agent`` writes, so the stream carries the replica's bootstrap token. grpcio reads it
  only with ``GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true`` (else it connects without, and
  the control plane refuses the stream: ``no credential``);
- ``certificate_providers.default``: the ``file_watcher`` plugin on the agent's files, the
  instance the translated clusters and server listeners name (gRFC A29) for the workload's
  certificate (``default``) and for the roots (``ROOTCA``);
- ``server_listener_resource_name_template``: the Listener an ``xds=True`` grpcio server asks
  for, ``xds.tulle.dev/grpc/lds/inbound/<ip>:<port>`` (gRFC A36).

``insecure=True`` gives the plain-text form (``--insecure-xds`` control planes), still with the
certificate provider when the agent's directory is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tulle.agent.agent import TOKEN_FILE
from tulle.security.material import BUNDLE_FILE, CHAIN_FILE, KEY_FILE
from tulle.xds.types import GRPC_SERVER_LISTENER_TEMPLATE

PROVIDER = "default"  # the instance name the translator's TLS contexts use
SERVER_LISTENER_TEMPLATE = GRPC_SERVER_LISTENER_TEMPLATE


class BootstrapError(ValueError):
    """Options that make no working bootstrap; the message names them."""


def _seconds(value: float) -> str:
    return f"{value:g}s"


def certificate_providers(certs: Path, refresh_interval: float) -> dict[str, Any]:
    """The ``default`` file_watcher provider on the files ``tulle agent`` writes in ``certs``."""
    return {
        PROVIDER: {
            "plugin_name": "file_watcher",
            "config": {
                "certificate_file": str(certs / CHAIN_FILE),
                "private_key_file": str(certs / KEY_FILE),
                "ca_certificate_file": str(certs / BUNDLE_FILE),
                "refresh_interval": _seconds(refresh_interval),
            },
        }
    }


def grpc_bootstrap(
    xds: str,
    node_id: str,
    *,
    root_cert: Path | None = None,
    certs: Path | None = None,
    insecure: bool = False,
    refresh_interval: float = 900.0,
) -> dict[str, Any]:
    """The bootstrap for node ``node_id`` of the control plane at ``xds``. Secure unless
    ``insecure``: then ``certs`` (the agent's directory, with the token) is needed, and the
    trust bundle is ``root_cert`` or else the agent's copy in ``certs``."""
    if refresh_interval <= 0:
        raise BootstrapError(f"--refresh-interval {refresh_interval:g}: must be positive")
    server: dict[str, Any] = {"server_uri": xds}
    if insecure:
        server["channel_creds"] = [{"type": "insecure"}]
    else:
        if certs is None:
            raise BootstrapError(
                "secure xDS needs --certs: the directory `tulle agent` keeps, which holds the "
                "token grpcio sends to the control plane (or --insecure for a control plane "
                "with --insecure-xds)"
            )
        bundle = (root_cert or certs / BUNDLE_FILE).absolute()
        server["channel_creds"] = [{"type": "tls", "config": {"ca_certificate_file": str(bundle)}}]
        server["call_creds"] = [
            {
                "type": "jwt_token_file",
                "config": {"jwt_token_file": str((certs / TOKEN_FILE).absolute())},
            }
        ]
    server["server_features"] = ["xds_v3"]
    bootstrap: dict[str, Any] = {
        "xds_servers": [server],
        "node": {"id": node_id, "locality": {}},
        "server_listener_resource_name_template": SERVER_LISTENER_TEMPLATE,
    }
    if certs is not None:
        bootstrap["certificate_providers"] = certificate_providers(
            certs.absolute(), refresh_interval
        )
    return bootstrap
