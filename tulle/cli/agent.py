"""``tulle agent``: keep a proxyless gRPC app's certificate files fresh (see ``tulle.agent``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def agent(
    certs: Annotated[
        Path,
        typer.Option(
            "--certs",
            help="Directory for cert-chain.pem, key.pem (0600), root-cert.pem and xds-token "
            "(0600); made 0700. `tulle bootstrap grpc --certs` points grpcio at it.",
        ),
    ],
    pod: Annotated[
        str,
        typer.Option(
            "--pod",
            help="The replica this agent serves (the node id's pod); the CA refuses a token "
            "issued to another replica.",
        ),
    ],
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="After `--`: the app to run once the files are written (it gets "
            "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true); the agent stops with it."
        ),
    ] = None,
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    ip: Annotated[
        str,
        typer.Option(
            "--ip",
            help="The replica's address in the node id the agent subscribes to the trust "
            "bundle (Secret ROOTCA) as; its app's bootstrap should say the same.",
        ),
    ] = "127.0.0.1",
    xds: Annotated[
        str,
        typer.Option("--xds", help="HOST:PORT of the control plane's secure xDS port (the CA)."),
    ] = "127.0.0.1:15012",
    xds_root_cert: Annotated[
        Path | None,
        typer.Option(
            help="The mesh's trust bundle (the control plane's root-cert.pem). "
            "Default: $TULLE_XDS_ROOT_CERT."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(help="This replica's bootstrap token (0600). Default: $TULLE_TOKEN_FILE."),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Get this replica's certificate from the mesh CA and keep its files fresh for grpcio."""
    import asyncio
    import logging

    from tulle.agent import AgentError, AgentSettings, run

    root = xds_root_cert or _from_env("TULLE_XDS_ROOT_CERT", "--xds-root-cert")
    token = token_file or _from_env("TULLE_TOKEN_FILE", "--token-file")
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = AgentSettings(
        xds=xds,
        root_cert=root.absolute(),
        token_file=token.absolute(),
        directory=certs.absolute(),
        replica=f"{pod}.{namespace}",
        command=tuple(command or ()),
        ip=ip,
    )
    try:
        code = asyncio.run(run(settings))
    except AgentError as error:
        typer.echo(f"tulle agent: {error}", err=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _from_env(variable: str, option: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        typer.echo(f"tulle agent: give {option} (or set {variable})", err=True)
        raise typer.Exit(2)
    return Path(value)
