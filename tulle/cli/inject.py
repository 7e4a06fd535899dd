"""``tulle inject -f FILE|-``: add the sidecar to Kubernetes objects (as ``istioctl kube-inject``).

Reads multi-document YAML, injects every Pod, pod template and List item with
``tulle.inject`` (the same function the admission webhook calls), and prints the documents;
other documents pass through unchanged. Warnings (annotations not applied, pods left alone) go to
stderr; an object that cannot be injected is an error naming the file, line, document and
field, and nothing is printed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from tulle.inject import MeshSettings


def inject(
    filename: Annotated[
        str, typer.Option("-f", "--filename", help="The YAML file to inject ('-': stdin).")
    ],
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write here instead of stdout.")
    ] = None,
    native_sidecar: Annotated[
        str,
        typer.Option(
            metavar="true|false",
            help="The sidecar as a native sidecar (an init container with restartPolicy "
            "Always; Kubernetes 1.29+); false: a regular first container that holds the app "
            "until it is ready (older clusters).",
        ),
    ] = "true",
    image: Annotated[str | None, typer.Option(help="The sidecar's image.")] = None,
    xds: Annotated[
        str | None, typer.Option(help="HOST:PORT of the control plane's secure xDS port.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="NAME=VALUE",
            help="Any other mesh setting (tulle.inject.MeshSettings: proxy_uid, health_port, "
            "cluster_domain, root_cert_config_map, ...).",
        ),
    ] = None,
) -> None:
    """Add the Tulle sidecar to the Pods and pod templates of a YAML file."""
    import yaml

    from tulle.api.source import parse_yaml
    from tulle.inject import InjectError
    from tulle.inject import inject as inject_object
    from tulle.inject.errors import format_path
    from tulle.inject.objects import describe

    settings = _settings(native_sidecar, image, xds, set_ or [])
    name = "<stdin>" if filename == "-" else filename
    try:
        text = sys.stdin.read() if filename == "-" else Path(filename).read_text()
    except (OSError, UnicodeDecodeError) as error:
        typer.echo(f"error: {name}: cannot read: {error}", err=True)
        raise typer.Exit(1) from None
    documents, findings = parse_yaml(text, name)
    if findings:
        for finding in findings:
            typer.echo(f"error: {finding.file}:{finding.line}: {finding.message}", err=True)
        raise typer.Exit(1)
    results = []
    warnings = []
    for number, document in enumerate(documents, start=1):
        where = f"{name}:{document.line} (document {number})"  # each warning names its object
        try:
            injection = inject_object(document.data, settings)
        except InjectError as error:
            line = document.line_of(error.path)
            typer.echo(
                f"error: {name}:{line} (document {number}, {describe(document.data)}): "
                f"{format_path(error.path)}: {error.message}",
                err=True,
            )
            raise typer.Exit(1) from None
        results.append(injection.object)
        warnings += [f"warning: {where}: {warning}" for warning in injection.warnings]
    for warning in warnings:
        typer.echo(warning, err=True)
    rendered = yaml.safe_dump_all(
        results, sort_keys=False, default_flow_style=False, width=2**16, allow_unicode=True
    )
    if output is None:
        sys.stdout.write(rendered if results else "")
        return
    try:
        output.write_text(rendered if results else "")
    except OSError as error:
        typer.echo(f"error: {output}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


def _settings(
    native_sidecar: str, image: str | None, xds: str | None, assigned: list[str]
) -> MeshSettings:
    """The mesh settings the options name; exit 2 saying which option is wrong."""
    from tulle.inject import MeshSettings
    from tulle.inject.settings import SettingsError

    assignments = dict(_assignment(text) for text in assigned)
    assignments["native_sidecar"] = native_sidecar
    if image is not None:
        assignments["image"] = image
    if xds is not None:
        assignments["xds_address"] = xds
    try:
        settings = MeshSettings().replace(assignments)
        settings.check()
    except SettingsError as error:
        option = str(error).split(":", 1)[0]
        flag = {"native_sidecar": "--native-sidecar", "image": "--image",
                "xds_address": "--xds"}.get(option, "--set")  # fmt: skip
        typer.echo(f"error: {flag}: {error}", err=True)
        raise typer.Exit(2) from None
    return settings


def _assignment(text: str) -> tuple[str, str]:
    name, sign, value = text.partition("=")
    if not sign or not name:
        typer.echo(f"error: --set: {text!r} is not NAME=VALUE", err=True)
        raise typer.Exit(2)
    return name, value
