"""``tulle check``: what in a running mesh needs attention, read from the control plane's API
and metrics and from the workloads' own metrics; the rules are :mod:`tulle.cli.check_rules`.
Prints one line per warning and exits 1 when there is one (0 when all is well), so scripts and
CI can gate on it."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated, Any

import typer

from tulle.cli.client import (
    DEFAULT_SERVER,
    Api,
    ServerOption,
    TokenOption,
    fail,
    report_error,
)
from tulle.cli.cluster import (
    ClusterApi,
    ContextOption,
    KubeconfigOption,
    KubeOption,
    NamespaceOption,
    connect_by_options,
)

StateOption = Annotated[
    Path,
    typer.Option(
        "--state-dir",
        help="A mesh `tulle up` runs: its workloads' metrics are read for the mTLS checks.",
    ),
]
MetricsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--metrics",
        help="WORKLOAD=URL of a workload's metrics (a sidecar's /stats/prometheus, a library "
        "app's /metrics) to check besides those of the local mesh; repeatable.",
    ),
]


def check(
    server: ServerOption = DEFAULT_SERVER,
    token: TokenOption = None,
    state_dir: StateOption = Path(".tulle"),
    metrics: MetricsOption = None,
    kube: KubeOption = False,
    context: ContextOption = None,
    kubeconfig: KubeconfigOption = None,
    namespace: NamespaceOption = None,
) -> None:
    """Warn when the root CA expires within 60 days, a node's certificate has expired or was
    not renewed, a workload has callers outside the mesh (refused by STRICT, or served in plain
    text), or an AuthorizationPolicy names a principal no workload has. With --kube, first a
    pre-flight of the cluster (Kubernetes version, CRDs, the control plane's Deployment, the
    webhooks, the control plane reachable, labelled namespaces and pods not injected), one
    line per check; then the same mesh checks of its control plane."""
    with closing(connect_by_options(server, token, kube, context, kubeconfig, namespace)) as api:
        _check(api, isinstance(api, ClusterApi), state_dir, metrics or [])


def _check(api: Api, kube: bool, state_dir: Path, metrics: list[str]) -> None:
    problems = 0
    if kube:
        from tulle.cli.cluster_check import preflight

        assert isinstance(api, ClusterApi)
        checked = preflight(api)
        for line in checked.findings:
            typer.echo(line.line())
        problems = sum(1 for line in checked.findings if line.problem)
        if not checked.reachable:
            typer.echo("the mesh checks need the control plane: skipped", err=True)
            raise typer.Exit(1)
    found, summary = _mesh_findings(api, None if kube else state_dir, metrics)
    for finding in found:
        typer.echo(f"warning [{finding.topic}]: {finding.message}")
    if found or problems:
        raise typer.Exit(1)
    typer.echo(f"no problems found ({summary})")


def _mesh_findings(api: Api, state_dir: Path | None, metrics: list[str]) -> tuple[list[Any], str]:
    """The mesh checks over ``api``: the findings, and a summary of what was checked."""
    from datetime import UTC, datetime

    from tulle.cli import check_rules as rules

    now = datetime.now(UTC)
    resources = _api(api, "/api/v1/resources")["items"]
    config = [item["resource"] for item in resources]
    nodes = _api(api, "/api/v1/proxy-status")["nodes"]
    endpoints = _api(api, "/api/v1/endpoints")["items"]
    identities = [n["certificate"]["identity"] for n in nodes if n.get("certificate")]
    principals = rules.known_principals(config, endpoints, identities)
    found = [
        *rules.root_warnings(api.text("/metrics"), now),
        *rules.certificate_warnings(nodes, now),
        *rules.mtls_warnings(_scrapes(state_dir, metrics), rules.strict_workloads(config)),
        *rules.policy_warnings(config, principals),
    ]
    summary = (
        f"{len(nodes)} nodes, {len(principals)} principals, "
        f"{sum(1 for r in config if r.get('kind') == 'AuthorizationPolicy')} policies"
    )
    return found, summary


def _api(api: Api, path: str) -> dict[str, Any]:
    status, data = api.call("GET", path)
    if status != 200:
        raise report_error(status, data)
    return data


def _scrapes(state_dir: Path | None, extra: list[str]) -> dict[str, list[str]]:
    """Workload → its replicas' metrics pages: those of the mesh ``tulle up`` runs
    from ``state_dir`` (when there is one), and ``extra`` (``WORKLOAD=URL``). A replica that
    does not answer is left out (it is restarting)."""
    import httpx

    from tulle.local.state import StateDir
    from tulle.local.targets import metric_targets

    mesh = StateDir(state_dir).read() if state_dir is not None else None
    urls = metric_targets(mesh) if mesh is not None else []
    for item in extra:
        workload, separator, url = item.partition("=")
        if not separator or not workload or not url:
            raise fail(f"error: --metrics {item!r}: expected WORKLOAD=URL")
        urls.append((workload, url))
    scrapes: dict[str, list[str]] = {}
    with httpx.Client(timeout=10.0) as client:
        for workload, url in urls:
            try:
                response = client.get(url)
            except httpx.HTTPError:
                continue
            if response.status_code == 200:
                scrapes.setdefault(workload, []).append(response.text)
    return scrapes
