"""``tulle install`` and ``tulle uninstall``: the control plane on Kubernetes, as
``istioctl install`` does it (print the manifests with ``-o yaml``, or apply them and wait)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_KUBECONFIG = typer.Option(help="Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).")
_CONTEXT = typer.Option(help="Kubeconfig context (default: its current context).")
_NAMESPACE = typer.Option(help="The control plane's namespace.")


def _set_help() -> str:
    from tulle.kube.install import SET_KEYS

    return "; ".join(f"{key.key} ({key.help})" for key in SET_KEYS)


def install(
    profile: Annotated[
        str, typer.Option(help="minimal (1 replica), default (2 and a PDB), demo (debug logs).")
    ] = "default",
    namespace: Annotated[str, _NAMESPACE] = "tulle-system",
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE, repeatable; `tulle install --set help=` lists the keys.",
        ),
    ] = None,
    output: Annotated[
        str | None, typer.Option("-o", "--output", help="yaml: print the manifests, apply none.")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Say what would be created or updated; change none."),
    ] = False,
    skip_istio_crds: Annotated[
        bool, typer.Option("--skip-istio-crds", help="Istio's CRDs are installed already.")
    ] = False,
    skip_gateway_api_crds: Annotated[
        bool,
        typer.Option("--skip-gateway-api-crds", help="Gateway API CRDs are installed."),
    ] = False,
    kubeconfig: Annotated[Path | None, _KUBECONFIG] = None,
    context: Annotated[str | None, _CONTEXT] = None,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the control plane to be ready.")
    ] = 300.0,
) -> None:
    """Install the control plane into a Kubernetes cluster (or print its manifests)."""
    from tulle.kube.install import InstallError, render, to_yaml, values_for

    if any(setting.partition("=")[0] == "help" for setting in settings or []):
        typer.echo(_set_help().replace("; ", "\n"))
        return
    if output not in (None, "yaml"):
        typer.echo(f"error: -o {output}: only yaml is supported", err=True)
        raise typer.Exit(2)
    try:
        values = values_for(
            profile,
            namespace,
            settings or [],
            skip_istio_crds=skip_istio_crds,
            skip_gateway_api_crds=skip_gateway_api_crds,
        )
        manifests = render(values)
    except InstallError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    if output == "yaml":
        typer.echo(to_yaml(manifests), nl=False)
        return
    from tulle.kube.apply import KubeInstallError, apply, connect, plan, wait_ready

    try:
        client, where = connect(kubeconfig, context)
        with client:
            if dry_run:
                typer.echo(f"tulle install --dry-run: profile {profile} into {where}")
                plan(client, manifests, typer.echo)
                return
            typer.echo(f"tulle install: profile {profile}, namespace {namespace}, into {where}")
            apply(client, manifests, typer.echo)
            wait_ready(client, namespace, typer.echo, timeout)
    except KubeInstallError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"✔ installed. Next: kubectl label namespace NAME tulle-injection=enabled; "
        f"kubectl get pods -n {namespace}"
    )


def uninstall(
    namespace: Annotated[str, _NAMESPACE] = "tulle-system",
    purge: Annotated[
        bool,
        typer.Option(
            "--purge", help="Also delete the CRDs, and with them every config resource of theirs."
        ),
    ] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted.")] = False,
    kubeconfig: Annotated[Path | None, _KUBECONFIG] = None,
    context: Annotated[str | None, _CONTEXT] = None,
) -> None:
    """Delete what `tulle install` created (the CRDs only with --purge)."""
    from tulle.kube.apply import KubeInstallError, connect
    from tulle.kube.apply import uninstall as remove
    from tulle.kube.install import InstallError, render, values_for

    try:
        manifests = render(values_for("default", namespace))
    except InstallError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    kinds = [("v1", "Namespace")] + [(m["apiVersion"], m["kind"]) for m in manifests]
    try:
        client, where = connect(kubeconfig, context)
        with client:
            typer.echo(f"tulle uninstall: namespace {namespace}, from {where}")
            count = remove(client, namespace, kinds, typer.echo, purge=purge, dry_run=dry_run)
    except KubeInstallError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    verb = "would delete" if dry_run else "deleted"
    typer.echo(f"✔ {verb} {count} objects")
