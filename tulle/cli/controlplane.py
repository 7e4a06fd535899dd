"""``tulle controlplane``: run the control plane in the foreground until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from tulle.control.admission import Review
    from tulle.control.app import ControlPlane
    from tulle.control.webhook import WebhookOptions
    from tulle.inject import MeshSettings


def controlplane(
    files: Annotated[
        list[Path] | None,
        typer.Option("-f", "--file", help="Config files or directories (watched for edits)."),
    ] = None,
    state_dir: Annotated[
        Path, typer.Option(help="Where applied config and endpoints persist.")
    ] = Path(".tulle"),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    xds_port: Annotated[int, typer.Option(help="ADS (gRPC) port, plain text.")] = 15010,
    secure_xds_port: Annotated[
        int, typer.Option(help="ADS and the CA's signing service over TLS (gRPC) port.")
    ] = 15012,
    ca_cert: Annotated[
        Path | None, typer.Option(help="Your own CA certificate (root or intermediate), PEM.")
    ] = None,
    ca_key: Annotated[Path | None, typer.Option(help="The key of --ca-cert, PEM.")] = None,
    insecure_xds: Annotated[
        bool,
        typer.Option(
            "--insecure-xds",
            help="Also serve xDS in plain text, to nodes that prove nothing (tests, stock "
            "grpcio clients without credentials); off by default.",
        ),
    ] = False,
    ca_chain: Annotated[
        Path | None,
        typer.Option(help="The chain from --ca-cert up to its root, PEM (for an intermediate)."),
    ] = None,
    http_port: Annotated[int, typer.Option(help="HTTP API port.")] = 15014,
    registry: Annotated[
        str,
        typer.Option(
            help="Where services and endpoints come from: local (the HTTP API, tulle up) or "
            "kubernetes (Services, EndpointSlices, Pods of the cluster; the local one too)."
        ),
    ] = "local",
    kubeconfig: Annotated[
        Path | None,
        typer.Option(help="With --registry kubernetes: a kubeconfig (default: in-cluster)."),
    ] = None,
    context: Annotated[
        str | None,
        typer.Option(help="With --registry kubernetes: the kubeconfig context to use."),
    ] = None,
    webhook_port: Annotated[
        int | None,
        typer.Option(
            help="Serve the admission webhooks (sidecar injection at /inject, config validation "
            "at /validate) over HTTPS on this port, with a certificate from the mesh CA; off "
            "when not given. With --registry kubernetes the webhook configurations' caBundle "
            "is kept equal to the mesh's root bundle."
        ),
    ] = None,
    webhook_address: Annotated[
        str, typer.Option(help="Address the webhooks listen on (loopback unless given).")
    ] = "127.0.0.1",
    namespace: Annotated[
        str,
        typer.Option(
            envvar="POD_NAMESPACE",
            help="The namespace the control plane runs in: its webhook certificate's names "
            "(tulle-controlplane.<namespace>.svc), never injected; with --registry kubernetes, "
            "where the CA's Secret is.",
        ),
    ] = "tulle-system",
    inject_set: Annotated[
        list[str] | None,
        typer.Option(
            "--inject-set",
            metavar="NAME=VALUE",
            help="A mesh setting of the injection webhook, as tulle inject --set (image, "
            "xds_address, proxy_uid, ...).",
        ),
    ] = None,
    trace_spans: Annotated[
        int,
        typer.Option(
            min=1,
            help="Spans the built-in trace store keeps in memory (the oldest traces are "
            "evicted whole past it).",
        ),
    ] = 20_000,
    scrape_targets: Annotated[
        Path | None,
        typer.Option(
            help="The dashboard's traffic figures: read the metrics pages this Prometheus "
            "file_sd_configs JSON file lists every few seconds, keeping 15 minutes (tulle up "
            "writes one)."
        ),
    ] = None,
    prometheus: Annotated[
        str | None,
        typer.Option(
            help="The dashboard's traffic figures from this Prometheus (its base URL), which "
            "scrapes the mesh's sidecars (on Kubernetes)."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error.")] = "info",
) -> None:
    """Serve xDS to the mesh's data planes and the config API."""
    from tulle.control.app import ControlPlane
    from tulle.control.dashboard_api import DashboardOptions
    from tulle.control.serving import PluginCa
    from tulle.dashboard import assets as dashboard_assets

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for path in files or []:
        if not path.exists():
            typer.echo(f"error: {path}: no such file or directory", err=True)
            raise typer.Exit(2)
    if (ca_cert is None) != (ca_key is None) or (ca_chain is not None and ca_cert is None):
        typer.echo("error: --ca-cert and --ca-key go together (--ca-chain needs both)", err=True)
        raise typer.Exit(2)
    if registry not in ("local", "kubernetes"):
        typer.echo(f"error: --registry: {registry!r} is not local or kubernetes", err=True)
        raise typer.Exit(2)
    if registry == "local" and (kubeconfig is not None or context is not None):
        typer.echo("error: --kubeconfig and --context go with --registry kubernetes", err=True)
        raise typer.Exit(2)
    if kubeconfig is not None and not kubeconfig.is_file():
        typer.echo(f"error: --kubeconfig {kubeconfig}: no such file", err=True)
        raise typer.Exit(2)
    plugin = PluginCa(ca_cert, ca_key, ca_chain) if ca_cert and ca_key else None
    webhook = None
    if webhook_port is not None:
        webhook = _webhook_options(webhook_port, webhook_address, namespace, inject_set or [])
    elif inject_set:
        typer.echo("error: --inject-set goes with --webhook-port", err=True)
        raise typer.Exit(2)
    if prometheus is not None and scrape_targets is not None:
        typer.echo("error: --prometheus and --scrape-targets: choose one", err=True)
        raise typer.Exit(2)
    if prometheus is not None and not prometheus.startswith(("http://", "https://")):
        typer.echo(f"error: --prometheus {prometheus!r}: expected an http(s):// URL", err=True)
        raise typer.Exit(2)
    if registry == "kubernetes":
        _take_shared_admin_token(kubeconfig, context, namespace, state_dir)
    plane = ControlPlane(
        files or [], state_dir, host, xds_port, http_port, secure_xds_port, plugin, insecure_xds,
        registry, kubeconfig, context, webhook, namespace, trace_spans,
    )  # fmt: skip
    plane.dashboard = DashboardOptions(dashboard_assets(), scrape_targets, prometheus)
    try:
        asyncio.run(_run(plane))
    except (OSError, ValueError) as error:  # a port in use, a broken or unusable CA
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None


def _take_shared_admin_token(
    kubeconfig: Path | None, context: str | None, namespace: str, state_dir: Path
) -> None:
    """With ``--registry kubernetes`` every replica's admin token is the one in the Secret
    tulle-admin-token (created when missing): written to the state directory before the API
    starts, where the API reads it. Exit 1 saying why when it cannot be had."""
    from tulle.control.kube_admin import (
        AdminTokenError,
        KubeConfigError,
        take_shared_admin_token,
    )

    try:
        take_shared_admin_token(kubeconfig, context, namespace, state_dir)
    except KubeConfigError as error:  # the connection settings, as the registry says them
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except (AdminTokenError, OSError) as error:
        typer.echo(f"error: the admin token: {error}", err=True)
        raise typer.Exit(1) from None


async def _run(plane: ControlPlane) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await plane.start()
    print(
        f"tulle controlplane: xDS on {plane.host}:{plane.xds_port}, "
        f"secure xDS on {plane.host}:{plane.secure_xds_port}, "
        f"API on http://{plane.host}:{plane.http_port}",
        flush=True,
    )
    if plane.webhooks is not None:
        print(
            f"tulle controlplane: webhooks on https://{plane.webhooks.options.address}:"
            f"{plane.webhooks.port}",
            flush=True,
        )
    await stop.wait()
    await plane.stop()


def _webhook_options(
    port: int, address: str, namespace: str, assigned: list[str]
) -> WebhookOptions:
    """The webhooks' options; exit 2 naming the option that is wrong. The sidecars injected
    reach the control plane at its Service's secure xDS port unless ``xds_address`` is set."""
    from tulle.control.webhook import WebhookOptions
    from tulle.inject import MeshSettings
    from tulle.inject.settings import SettingsError
    from tulle.kube.install.names import CONTROL_PLANE, XDS_PORT

    if not 0 <= port <= 65535:
        typer.echo(f"error: --webhook-port: {port} is not a port (0-65535)", err=True)
        raise typer.Exit(2)
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", namespace):
        typer.echo(f"error: --namespace: {namespace!r} is not a namespace name", err=True)
        raise typer.Exit(2)
    assignments = {}
    for text in assigned:
        name, sign, value = text.partition("=")
        if not sign or not name:
            typer.echo(f"error: --inject-set: {text!r} is not NAME=VALUE", err=True)
            raise typer.Exit(2)
        assignments[name] = value
    try:
        default = MeshSettings(xds_address=f"{CONTROL_PLANE}.{namespace}.svc:{XDS_PORT}")
        settings = default.replace(assignments)
        settings.check()
    except SettingsError as error:
        typer.echo(f"error: --inject-set: {error}", err=True)
        raise typer.Exit(2) from None
    injector = functools.partial(_inject, settings, namespace)
    return WebhookOptions(
        port, injector, address, namespace, cluster_domain=settings.cluster_domain
    )


def _inject(settings: MeshSettings, namespace: str, review: Review) -> dict[str, Any]:
    """``/inject``: the injector's decision (tulle.inject) in the AdmissionReview envelope
    (tulle.control)."""
    from tulle.control.admission import respond
    from tulle.inject.admission import admit_pod

    decision = admit_pod(
        review.operation, review.group, review.kind, review.namespace, review.object,
        settings, namespace,
    )  # fmt: skip
    return respond(
        review.uid,
        decision.allowed,
        decision.message,
        patch=list(decision.patch),
        warnings=decision.warnings,
        code=decision.code,
    )
