"""``tulle ca``: the mesh CA's roots and their rotation (status, stage, activate, retire, and
``rotate``, which walks every step and waits between them until it is safe)."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any

import typer

from tulle.cli.client import DEFAULT_SERVER, ServerOption, TokenOption, call, fail, report_error

ca_app = typer.Typer(
    help="The mesh CA: its roots, and root rotation (stage, activate, retire).",
    no_args_is_help=True,
)

ForceOption = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Take the step although workloads in use are not ready for it (they then fail "
        "mTLS until they renew).",
    ),
]


def _status(server: str, token: str | None) -> dict[str, Any]:
    status, data = call(server, token, "GET", "/api/v1/ca")
    if status != 200:
        raise report_error(status, data)
    return data


def _print_status(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=250)
    console.print(f"CA: {data['ca']}, trust domain {data['trustDomain']}, phase {data['phase']}")
    roots = Table(box=None)
    for column in ("ROOT", "ROLE", "SUBJECT", "NOT AFTER"):
        roots.add_column(column)
    for root in data["roots"]:
        roots.add_row(root["name"], root["role"], root["subject"], root["notAfter"][:19])
    console.print(roots)
    workloads = Table(box=None)
    for column in ("REPLICA", "SERIAL", "SIGNED BY", "TRUSTS", "EXPIRES"):
        workloads.add_column(column)
    for item in data["workloads"]:
        workloads.add_row(
            item["replica"],
            item.get("serial", "-"),
            item.get("root", "-"),
            ", ".join(item.get("trusts", [])) or "-",
            item.get("notAfter", "-")[:19],
        )
    console.print(workloads)
    step = data["next"]
    if step["step"] is not None:
        state = "ready" if step["ready"] else "waiting"
        console.print(f"next step: {step['step']} ({state})")
    for line in step["waitingFor"]:
        console.print(f"  waiting for {line}", markup=False)
    if not data["settled"]:
        console.print("some workloads do not hold the current trust bundle yet")


def status(
    output: Annotated[str, typer.Option("-o", "--output", help="table or json.")] = "table",
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """The CA's roots (active, staged, retiring), each workload's certificate (the root that
    signed it, the roots it trusts) and the rotation's next step."""
    data = _status(server, token)
    if output == "json":
        typer.echo(json.dumps(data, indent=2))
    elif output == "table":
        _print_status(data)
    else:
        raise fail(f"error: --output must be table or json, not {output!r}")


def _step(server: str, token: str | None, step: str, force: bool = False) -> dict[str, Any]:
    status_code, data = call(server, token, "POST", f"/api/v1/ca/{step}", json={"force": force})
    if status_code != 200:
        typer.echo(f"error: {data.get('error', status_code)}", err=True)
        for line in data.get("waitingFor", []):
            typer.echo(f"  waiting for {line}", err=True)
        raise typer.Exit(1)
    return data


def stage(server: ServerOption = DEFAULT_SERVER, token: TokenOption = None) -> None:
    """Make a new root: trusted by every workload from now on (they renew within seconds),
    signing nothing until it is activated."""
    data = _step(server, token, "stage")
    typer.echo(f"staged root {data['staged']}; root {data['active']} still signs")


def activate(
    force: ForceOption = False, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None
) -> None:
    """Make the staged root the signer (refused until every workload in use trusts it)."""
    data = _step(server, token, "activate", force)
    typer.echo(f"root {data['active']} now signs; workloads renew with it")


def retire(
    force: ForceOption = False, server: ServerOption = DEFAULT_SERVER, token: TokenOption = None
) -> None:
    """Drop the old root from the trust bundle and its key from the disk (refused while a
    workload in use holds a leaf it signed)."""
    data = _step(server, token, "retire", force)
    typer.echo(f"only root {data['active']} is trusted now")


def rotate(
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for the workloads at each step.")
    ] = 300.0,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Rotate the root: stage a new one, wait until every workload in use trusts it, activate
    it, wait until every workload holds a leaf it signed, retire the old one, and wait until
    every workload holds the new bundle. Picks up where an interrupted rotation stopped."""
    data = _status(server, token)
    if data["ca"] != "self-managed":
        raise fail(f"error: {data['next']['waitingFor'][0]}")
    if data["phase"] == "idle":
        data = _step(server, token, "stage")
        typer.echo(f"staged root {data['staged']}")
    for step in ("activate", "retire"):
        if data["next"]["step"] != step:
            continue
        data = _wait(server, token, timeout, f"{step} to be safe", lambda d: d["next"]["ready"])
        data = _step(server, token, step)
        typer.echo(f"{step}d: root {data['active']} signs, roots trusted: "
                   f"{', '.join(r['name'] for r in data['roots'])}")  # fmt: skip
    _wait(server, token, timeout, "every workload to hold the new bundle", lambda d: d["settled"])
    typer.echo(f"rotation done: every workload in use trusts only root {data['active']}")


def _wait(server: str, token: str | None, timeout: float, what: str, ready: Any) -> dict[str, Any]:
    """Poll the CA's status until ``ready(status)``; exit saying who is late after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        data = _status(server, token)
        if ready(data):
            return data
        if time.monotonic() >= deadline:
            typer.echo(f"error: gave up after {timeout:g}s waiting for {what}", err=True)
            for line in data["next"]["waitingFor"]:
                typer.echo(f"  waiting for {line}", err=True)
            raise typer.Exit(1)
        time.sleep(1.0)


ca_app.command("status")(status)
ca_app.command("stage")(stage)
ca_app.command("activate")(activate)
ca_app.command("retire")(retire)
ca_app.command("rotate")(rotate)
