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
    hosts_from: Annotated[
        list[Path] | None,
        typer.Option(
            "--hosts-from",
            metavar="PATH",
            help="A file or directory of Kubernetes Service, ServiceEntry or Workload manifests "
            "read for their hosts only (its own findings are not reported). Repeatable.",
        ),
    ] = None,
    strict_hosts: Annotated[
        bool,
        typer.Option(
            "--strict-hosts",
            help="A host no file defines is an ERROR even when the files hold no Workload.",
        ),
    ] = False,
) -> None:
    """Validate config: every schema error and cross-resource problem, one line each.

    Exit status 1 when there is any error, 0 otherwise (warnings alone pass). Kubernetes
    objects that are not mesh config (Deployments, ServiceAccounts...) are skipped, each with
    an INFO line; Kubernetes Services are read as hosts.

    A host that no Workload, Service or ServiceEntry of the files (or of --hosts-from) defines
    is an ERROR when the files hold a Workload (they define the mesh's workloads: local mode)
    or with --strict-hosts; otherwise a WARNING: it must exist elsewhere (on Kubernetes, a
    Service) for the config to apply."""
    from tulle.api import hosts_defined_in, validate_paths
    from tulle.api.findings import Severity, has_errors

    known, unreadable = hosts_defined_in(hosts_from) if hosts_from else (set[str](), [])
    result = validate_paths(paths, known, strict_hosts)
    findings = [*unreadable, *result.findings]
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
