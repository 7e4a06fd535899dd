"""``tulle tap WORKLOAD``: a workload's live requests, as ``linkerd viz tap`` shows them."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tulle.local.tap import Merged

STATE_HELP = "The local mesh's state directory (what `tulle up` runs)."


class TapFormat(StrEnum):
    """How ``tulle tap`` prints."""

    text = "text"  # linkerd's req/rsp/end lines
    wide = "wide"  # and the peer, upstream workload, route, cluster, request id
    json = "json"  # one JSON object per request


def tap(
    workload: Annotated[str, typer.Argument(help="A workload, or one replica (frontend-0).")],
    path: Annotated[str, typer.Option(help="Requests whose path starts with this.")] = "",
    method: Annotated[str, typer.Option(help="Requests with this method.")] = "",
    authority: Annotated[str, typer.Option(help="Requests with this :authority (Host).")] = "",
    status: Annotated[
        str, typer.Option(help="Responses with this status (503) or class (5xx).")
    ] = "",
    most: Annotated[
        int, typer.Option("--max", help="Stop after this many requests (0: never).", min=0)
    ] = 0,
    output: Annotated[TapFormat, typer.Option("-o", "--output")] = TapFormat.text,
    state_dir: Annotated[Path, typer.Option("--state-dir", help=STATE_HELP)] = Path(".tulle"),
) -> None:
    """Stream the requests a workload's replicas serve and send, live (Ctrl-C to stop): their
    sidecars' or their library's, filtered where they happen."""
    from tulle.local.state import StateDir
    from tulle.local.tap import Merged, TapError, tap_targets
    from tulle.obs.tap import TapFilter, TapFilterError

    try:
        TapFilter(path, method, authority, status)
    except TapFilterError as error:
        raise _fail(f"error: --{error}") from None
    mesh = StateDir(state_dir).read()
    if mesh is None:
        raise _fail(f"error: no mesh runs from {state_dir} (start one with `tulle up -f PATH`)")
    try:
        targets, skipped = tap_targets(mesh, workload)
    except TapError as error:
        raise _fail(f"error: {error}") from None
    for line in skipped:
        typer.echo(f"warning: {line}", err=True)
    if not targets:
        raise _fail(f"error: no replica of {workload!r} serves a tap")
    given = {"path": path, "method": method, "authority": authority, "status": status}
    params = {key: value for key, value in given.items() if value}
    if most:
        params["max"] = str(most)
    merged = Merged(targets, params)
    try:
        shown, failed = _print(merged, [t.replica for t in targets], most, output)
    except KeyboardInterrupt:
        return
    finally:
        merged.close()
    if failed == len(targets) and not shown:
        raise typer.Exit(1)


def _print(merged: Merged, replicas: list[str], most: int, output: TapFormat) -> tuple[int, int]:
    """Print what the taps send until ``most`` requests (0: until they end): how many were
    shown, and how many taps ended or failed."""
    from tulle.local.tap import lines

    shown, failed = 0, 0
    numbers = dict.fromkeys(replicas, 0)
    while not most or shown < most:
        item = merged.next()
        if item is None:
            break
        replica, got = item
        if isinstance(got, str):  # that replica's tap ended or failed
            failed += 1
            typer.echo(f"warning: {replica}: {got}", err=True)
            continue
        if "dropped" in got:
            typer.echo(
                f"warning: {replica} dropped {got['dropped']} requests so far "
                "(this tap read too slowly)",
                err=True,
            )
            continue
        numbers[replica] += 1
        shown += 1
        if output is TapFormat.json:
            typer.echo(json.dumps({"replica": replica, **got}))
        else:
            for text in lines(replica, numbers[replica], got, output is TapFormat.wide):
                typer.echo(text)
        sys.stdout.flush()
    return shown, failed


def _fail(message: str) -> typer.Exit:
    typer.echo(message, err=True)
    return typer.Exit(1)
