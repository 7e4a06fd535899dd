"""``tulle iptables``: install the traffic-redirect rules of a pod (its init step)."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from tulle.proxy.iptables import RedirectPlan, apply


def iptables(
    outbound_port: Annotated[
        int, typer.Option(help="The proxy's outbound (transparent) port.")
    ] = 15001,
    inbound_port: Annotated[int, typer.Option(help="The proxy's inbound port.")] = 15006,
    mark: Annotated[
        str, typer.Option(help="Packet mark of the proxy's own traffic ('' for none).")
    ] = "0x539",
    proxy_uid: Annotated[
        int | None, typer.Option(help="Uid of the proxy process, to exclude.")
    ] = None,
    exclude_outbound_port: Annotated[
        list[int] | None, typer.Option(help="Outbound ports left alone (e.g. xDS).")
    ] = None,
    exclude_outbound_cidr: Annotated[
        list[str] | None, typer.Option(help="Destinations left alone.")
    ] = None,
    exclude_inbound_port: Annotated[
        list[int] | None,
        typer.Option(
            help="Inbound ports left alone, besides 15000, 15020 and 15021 (the sidecar's "
            "admin, stats and health ports)."
        ),
    ] = None,
    no_inbound: Annotated[
        bool, typer.Option("--no-inbound", help="Redirect outbound only.")
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the rules instead.")] = False,
) -> None:
    """Redirect the pod's TCP traffic through its sidecar (run as root in the pod's namespace)."""
    plan = RedirectPlan(
        outbound_port=outbound_port,
        inbound_port=inbound_port,
        mark=int(mark, 0) if mark else None,
        proxy_uid=proxy_uid,
        exclude_outbound_ports=tuple(exclude_outbound_port or ()),
        exclude_outbound_cidrs=tuple(exclude_outbound_cidr or ()),
        exclude_inbound_ports=tuple(
            dict.fromkeys((*RedirectPlan.exclude_inbound_ports, *(exclude_inbound_port or ())))
        ),
        inbound=not no_inbound,
    )
    if dry_run:
        for rule in plan.rules():
            typer.echo(shlex.join(["iptables", *rule]))
        return
    try:
        apply(plan)
    except (RuntimeError, FileNotFoundError) as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
