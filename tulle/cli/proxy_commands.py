"""``tulle proxy-status``, ``tulle proxy-config``, ``tulle bootstrap grpc``."""

from __future__ import annotations

import json
import os
import socket
from contextlib import closing
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tulle.cli.client import DEFAULT_SERVER, ServerOption, TokenOption, report_error
from tulle.cli.cluster import (
    ContextOption,
    KubeconfigOption,
    KubeOption,
    NamespaceOption,
    connect_by_options,
)
from tulle.xds.node import make_node_id

_TYPES = ("listeners", "routes", "clusters", "endpoints")


class ConfigFormat(StrEnum):
    """How ``tulle proxy-config`` prints."""

    json = "json"
    yaml = "yaml"


def proxy_status(
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    kube: KubeOption = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Each connected node: per type its ACKed version, whether it is current, the last NACK;
    its certificate's expiry; a proxyless gRPC server's mTLS mode (STRICT or DISABLE). With
    --kube, those of a cluster's control plane."""
    from rich.console import Console
    from rich.table import Table

    with closing(connect_by_options(server, token, kube, context, kubeconfig, namespace)) as api:
        status, data = api.call("GET", "/api/v1/proxy-status")
    if status != 200:
        raise report_error(status, data)
    table = Table(box=None)
    table.add_column("NODE")
    table.add_column("MODE")
    for name in _TYPES:
        table.add_column(name.upper())
    table.add_column("CERTIFICATE EXPIRES")
    table.add_column("SERVER MTLS")
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
        cells.append(_server_mtls(node.get("serverMtls")))
        mode = node["mode"]
        if node["types"] and set(node["types"]) <= {"secrets"}:
            mode += " (agent)"  # a tulle agent's stream: the trust bundle (ROOTCA) only
        table.add_row(node["node"], mode, *cells)
    Console(width=250).print(table)
    for line in nacks:
        typer.echo(f"NACK {line}")


def _server_mtls(modes: dict[str, str] | None) -> str:
    """A proxyless server's mode per address (``STRICT 127.0.0.1:50051``); ``-`` otherwise."""
    if not modes:
        return "-"
    return ", ".join(f"{mode} {address}" for address, mode in sorted(modes.items()))


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
    kube: KubeOption = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """What a node was sent, as protobuf JSON (the shape of Envoy's config_dump). With --kube,
    a node of a cluster's control plane."""
    import yaml

    with closing(connect_by_options(server, token, kube, context, kubeconfig, namespace)) as api:
        query = {"node": node, "type": type_name}
        status, data = api.call("GET", "/api/v1/proxy-config", params=query)
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
        str,
        typer.Option("--xds", help="HOST:PORT of the control plane's xDS (the secure port)."),
    ] = "127.0.0.1:15012",
    xds_root_cert: Annotated[
        Path | None,
        typer.Option(
            help="The mesh's trust bundle (the control plane's root-cert.pem): grpcio's xDS "
            "client verifies the control plane with it (channel_creds 'tls')."
        ),
    ] = None,
    certs: Annotated[
        Path | None,
        typer.Option(
            "--certs",
            help="The directory `tulle agent --certs` keeps fresh: the 'default' file_watcher "
            "certificate provider (mTLS) and the token grpcio sends to the secure port.",
        ),
    ] = None,
    refresh_interval: Annotated[
        float,
        typer.Option(
            help="Seconds between grpcio's reads of the certificate files; keep it well under "
            "half the certificate lifetime."
        ),
    ] = 900.0,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Plain-text xDS with no credential (a control plane with --insecure-xds).",
        ),
    ] = False,
    pod: Annotated[
        str | None,
        typer.Option("--pod", help="The node id's pod: the replica whose token the agent holds."),
    ] = None,
    node_id: Annotated[
        str | None,
        typer.Option("--node-id", help="Default: proxyless~127.0.0.1~<pod>.<namespace>~..."),
    ] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
) -> None:
    """Print the JSON a stock grpcio client or server reads from GRPC_XDS_BOOTSTRAP."""
    from tulle.agent.bootstrap import BootstrapError, grpc_bootstrap

    if node_id is None:
        pod = pod or f"{socket.gethostname()}-{os.getpid()}"
        node_id = make_node_id("proxyless", "127.0.0.1", pod, namespace)
    try:
        bootstrap = grpc_bootstrap(
            xds, node_id, root_cert=xds_root_cert, certs=certs, insecure=insecure,
            refresh_interval=refresh_interval,
        )  # fmt: skip
    except BootstrapError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(bootstrap, indent=2))


@bootstrap_app.command("token")
def bootstrap_token(
    pod: Annotated[str, typer.Option("--pod", help="The replica's pod (its node id's pod).")],
    service_account: Annotated[
        str, typer.Option("--service-account", help="The identity the token proves.")
    ],
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    state_dir: Annotated[
        Path,
        typer.Option(
            help="The control plane's state directory (.tulle/controlplane under tulle up)."
        ),
    ] = Path(".tulle"),
) -> None:
    """Issue a replica's bootstrap token (as tulle up does for its replicas) and print the path
    of its 0600 file: what `tulle agent --token-file` reads for a proxyless app started by hand.
    Issuing again replaces the replica's earlier token."""
    from tulle.security.tokens import BootstrapTokens

    try:
        path = BootstrapTokens(state_dir).issue(namespace, service_account, f"{pod}.{namespace}")
    except (ValueError, OSError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    typer.echo(str(path.absolute()))
