"""``tulle apply``, ``tulle get``, ``tulle delete``: config through the control plane's API."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tulle.cli.client import DEFAULT_SERVER, ServerOption, TokenOption, call, fail, report_error


class GetFormat(StrEnum):
    """How ``tulle get`` prints."""

    table = "table"
    yaml = "yaml"
    json = "json"


def _files(paths: list[Path]) -> list[Path]:
    from tulle.api.source import YAML_SUFFIXES

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(p for p in sorted(path.rglob("*")) if p.suffix in YAML_SUFFIXES)
        elif path.exists():
            files.append(path)
        else:
            raise fail(f"error: {path}: no such file or directory", 2)
    return files


_INFO = re.compile(r"^.*?:\d+: INFO ")


def _about(line: str, path: Path) -> bool:
    """Whether ``tulle apply`` of ``path`` shows a finding the control plane answered: all but
    the INFO lines of other files (the Kubernetes objects its own ``-f`` files skip)."""
    return line.startswith(f"{path}:") or not _INFO.match(line)


def apply(
    files: Annotated[list[Path], typer.Option("-f", "--file", help="YAML files or directories.")],
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Create or update resources; a file with any error changes nothing."""
    for path in _files(files):
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise fail(f"error: {path}: {error}") from None
        status, data = call(
            server,
            token,
            "POST",
            "/api/v1/resources",
            content=text.encode(),
            headers={"x-tulle-filename": str(path), "content-type": "application/yaml"},
        )
        if status != 200:
            raise report_error(status, data)
        for verb in ("created", "updated", "unchanged"):
            for ref in data.get(verb, []):
                typer.echo(f"{ref} {verb}")
        for line in data.get("warnings", []):
            if _about(line, path):
                typer.echo(line, err=True)


def get(
    kind: Annotated[str | None, typer.Argument(help="Kind (e.g. virtualservice, vs, dr).")] = None,
    name: Annotated[str | None, typer.Argument(help="Name.")] = None,
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    output: Annotated[GetFormat, typer.Option("-o", "--output")] = GetFormat.table,
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """List the config in force (from files and applied)."""
    import yaml
    from rich.console import Console
    from rich.table import Table

    params = {k: v for k, v in (("kind", kind), ("name", name), ("namespace", namespace)) if v}
    if name and not namespace:
        params["namespace"] = "default"
    status, data = call(server, token, "GET", "/api/v1/resources", params=params)
    if status != 200:
        raise report_error(status, data)
    items = data["items"]
    if output is GetFormat.json:
        typer.echo(json.dumps([i["resource"] for i in items], indent=2))
    elif output is GetFormat.yaml:
        typer.echo(yaml.safe_dump_all([i["resource"] for i in items], sort_keys=False), nl=False)
    else:
        table = Table(box=None)
        for column in ("KIND", "NAMESPACE", "NAME", "SOURCE"):
            table.add_column(column)
        for item in items:
            resource = item["resource"]
            meta = resource["metadata"]
            table.add_row(
                resource["kind"], meta.get("namespace", "default"), meta["name"], item["source"]
            )
        Console(width=200).print(table)


def delete(
    kind: Annotated[str, typer.Argument(help="Kind.")],
    name: Annotated[str, typer.Argument(help="Name.")],
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
) -> None:
    """Delete an applied resource (refused if the rest of the config still needs it)."""
    status, data = call(server, token, "DELETE", f"/api/v1/resources/{kind}/{namespace}/{name}")
    if status != 200:
        raise report_error(status, data)
    for ref in data["deleted"]:
        typer.echo(f"{ref} deleted")
