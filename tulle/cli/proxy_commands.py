"""``tulle proxy-status``, ``tulle proxy-config``, ``tulle bootstrap grpc``."""

from __future__ import annotations

import json
import os
import socket
from enum import StrEnum
from typing import Annotated

import typer

from tulle.cli.client import DEFAULT_SERVER, ServerOption, TokenOption, call, report_error
from tulle.xds.node import make_node_id

_TYPES = ("listeners", "routes", "clusters", "endpoints")


class ConfigFormat(StrEnum):
    """How ``tulle proxy-config`` prints."""

    json = "json"
    yaml = "yaml"


def proxy_status(server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Each connected node: per type its ACKed version, whether it is current, the last NACK."""
    from rich.console import Console
    from rich.table import Table

    status, data = call(server, token, "GET", "/api/v1/proxy-status")
    if status != 200:
        raise report_error(status, data)
    table = Table(box=None)
    table.add_column("NODE")
    table.add_column("MODE")
    for name in _TYPES:
        table.add_column(name.upper())
    table.add_column("CERTIFICATE EXPIRES")
    nacks: list[str] = []
    for node in data["nodes"]:
        cells = []
        for name in _TYPES:
            state = node["types"].get(name)
            if state is None:
                cells.append("-")
            elif state["nack"]:
                cells.append(f"NACK ({(state['acked'] or 'none')[:8]})")
                nacks.append(f"{node['node']} {name}: {state['nack']}")
            elif state["current"]:
                cells.append(f"SYNCED ({state['acked'][:8]})")
            else:
                cells.append(f"STALE ({(state['acked'] or 'none')[:8]})")
        certificate = node.get("certificate")
        cells.append(certificate["notAfter"][:19] if certificate else "-")
        table.add_row(node["node"], node["mode"], *cells)
    Console(width=250).print(table)
    for line in nacks:
        typer.echo(f"NACK {line}")


def proxy_config(
    node: Annotated[str, typer.Argument(help="Node id, as `tulle proxy-status` shows it.")],
    type_name: Annotated[
        str,
        typer.Option(
            "--type",
            help="listeners, routes, clusters, endpoints, or secrets (the node's certificate: "
            "SPIFFE id, serial, validity; and the trust bundle).",
        ),
    ] = "listeners",
    output: Annotated[ConfigFormat, typer.Option("-o", "--output")] = ConfigFormat.json,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """What a node was sent, as protobuf JSON (the shape of Envoy's config_dump)."""
    import yaml

    status, data = call(
        server, token, "GET", "/api/v1/proxy-config", params={"node": node, "type": type_name}
    )
    if status != 200:
        raise report_error(status, data)
    if output is ConfigFormat.yaml:
        typer.echo(yaml.safe_dump(data["resources"], sort_keys=False), nl=False)
    else:
        typer.echo(json.dumps(data["resources"], indent=2))


bootstrap_app = typer.Typer(help="Write bootstrap files for data planes.", no_args_is_help=True)


@bootstrap_app.command("grpc")
def bootstrap_grpc(
    xds: Annotated[
        str, typer.Option("--xds", help="HOST:PORT of the control plane's xDS.")
    ] = "127.0.0.1:15010",
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="Default: proxyless~<ip>~<host>-<pid>.default~..."),
    ] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
) -> None:
    """Print the JSON a stock grpcio client reads from GRPC_XDS_BOOTSTRAP."""
    if node_id is None:
        node_id = make_node_id(
            "proxyless", "127.0.0.1", f"{socket.gethostname()}-{os.getpid()}", namespace
        )
    bootstrap = {
        "xds_servers": [
            {
                "server_uri": xds,
                "channel_creds": [{"type": "insecure"}],
                "server_features": ["xds_v3"],
            }
        ],
        "node": {"id": node_id, "locality": {}},
    }
    typer.echo(json.dumps(bootstrap, indent=2))
