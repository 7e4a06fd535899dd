"""``tulle validate PATH...``: check config files and directories, print every finding."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class OutputFormat(StrEnum):
    """How findings are printed."""

    text = "text"
    json = "json"


def validate(
    paths: Annotated[list[Path], typer.Argument(help="YAML files or directories (recursive).")],
    output: Annotated[
        OutputFormat, typer.Option("--output", "-o", help="text (one line per finding) or json.")
    ] = OutputFormat.text,
) -> None:
    """Validate config: every schema error and cross-resource problem, one line each.

    Exit status 1 when there is any error, 0 otherwise (warnings alone pass). Kubernetes
    objects that are not mesh config (Deployments, ServiceAccounts...) are skipped, each with
    an INFO line; Kubernetes Services are read as hosts."""
    from tulle.api import validate_paths
    from tulle.api.findings import Severity, has_errors

    result = validate_paths(paths)
    findings = result.findings
    if output is OutputFormat.json:
        payload = {
            "resources": len(result.resources),
            "errors": sum(f.severity is Severity.ERROR for f in findings),
            "warnings": sum(f.severity is Severity.WARNING for f in findings),
            "info": sum(f.severity is Severity.INFO for f in findings),
            "findings": [finding.to_dict() for finding in findings],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        for finding in findings:
            typer.echo(finding.format())
        errors = sum(f.severity is Severity.ERROR for f in findings)
        warnings = sum(f.severity is Severity.WARNING for f in findings)
        summary = f"{len(result.resources)} resources, {errors} errors, {warnings} warnings"
        skipped = sum(f.severity is Severity.INFO for f in findings)
        if skipped:
            summary += f", {skipped} info"
        typer.echo(summary, err=True)
    raise typer.Exit(1 if has_errors(findings) else 0)
