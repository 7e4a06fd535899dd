"""``--kube``: the CLI's commands against the control plane of a cluster, reached through the
Kubernetes API server with the user's kubeconfig (tulle.kube.cluster), as ``istioctl`` reaches
istiod. ``--context``, ``--kubeconfig`` or ``--namespace`` imply it; without any of them the
commands talk to the local control plane as before."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tulle.cli.client import DEFAULT_SERVER, Api, LocalApi, fail

if TYPE_CHECKING:
    from tulle.kube.cluster import Cluster, ControlPlaneProxy

DEFAULT_NAMESPACE = "tulle-system"

KubeOption = Annotated[
    bool,
    typer.Option(
        "--kube",
        help="Reach the control plane of the current kube context through the Kubernetes API "
        "server (its service proxy), with your kubeconfig's credentials; the admin token is "
        "read from the Secret tulle-admin-token (or --token).",
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", help="With --kube: the kubeconfig context (implies --kube)."),
]
KubeconfigOption = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="With --kube: the kubeconfig (default: $KUBECONFIG, then ~/.kube/config; implies "
        "--kube).",
    ),
]
NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        help=f"With --kube: the control plane's namespace (default {DEFAULT_NAMESPACE}; "
        "implies --kube).",
    ),
]


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster, and the control plane's namespace in it."""

    kubeconfig: Path | None
    context: str | None
    namespace: str


def kube_target(
    kube: bool, context: str | None, kubeconfig: Path | None, namespace: str | None, server: str
) -> KubeTarget | None:
    """The cluster the options name; None for the local control plane. Exit 2 when
    ``--server`` is given too (one place to reach the control plane)."""
    if not (kube or context or kubeconfig or namespace):
        return None
    if server != DEFAULT_SERVER:
        raise fail(
            "error: --server and --kube (--context, --kubeconfig, --namespace) are two ways to "
            "reach the control plane: give one",
            2,
        )
    if kubeconfig is not None and not kubeconfig.is_file():
        raise fail(f"error: --kubeconfig {kubeconfig}: no such file", 2)
    return KubeTarget(kubeconfig, context, namespace or DEFAULT_NAMESPACE)


class ClusterApi:
    """The control plane's HTTP API through the API server (an :class:`Api`)."""

    def __init__(self, cluster: Cluster, proxy: ControlPlaneProxy, token_given: bool) -> None:
        self.cluster = cluster
        self.proxy = proxy
        self.token_given = token_given
        self.where = proxy.where

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        """See :class:`tulle.cli.client.Api`."""
        from tulle.kube.cluster import ClusterError

        params = {key: str(value) for key, value in (kwargs.pop("params", None) or {}).items()}
        if kwargs:
            raise TypeError(f"unsupported arguments through the API server: {sorted(kwargs)}")
        try:
            answer = self.proxy.request(method, path, params=params)
        except ClusterError as error:
            raise fail(f"error: {error}") from None
        try:
            data = answer.json()
        except ValueError:
            raise fail(
                f"error: {method} {path} through the API server: HTTP {answer.status} without "
                f"JSON: {answer.message()}"
            ) from None
        if not isinstance(data, dict):
            raise fail(f"error: {method} {path}: the answer is not a JSON object")
        if data.get("kind") == "Status" and "error" not in data:
            # The API server's own refusal (RBAC, no endpoint), not the control plane's.
            data = {"error": f"the API server ({self.cluster.where}): {answer.message()}"}
        elif answer.status == 401:
            namespace = self.proxy.namespace
            hint = (
                "the token given with --token was refused"
                if self.token_given
                else f"the token of the Secret {namespace}/tulle-admin-token was refused: if "
                "the Secret was replaced after the control plane started, restart it: kubectl "
                f"-n {namespace} rollout restart deployment tulle-controlplane"
            )
            data["error"] = f"{data.get('error', 'unauthenticated')} ({hint})"
        return answer.status, data

    def text(self, path: str) -> str:
        """See :class:`tulle.cli.client.Api`."""
        from tulle.kube.cluster import ClusterError

        try:
            answer = self.proxy.request("GET", path, auth=False)
        except ClusterError as error:
            raise fail(f"error: {error}") from None
        if answer.status != 200:
            raise fail(f"error: GET {path} ({self.where}): HTTP {answer.status}: "
                       f"{answer.message()}")  # fmt: skip
        return answer.body.decode(errors="replace")

    def close(self) -> None:
        """Close the connections to the API server."""
        self.cluster.close()


def connect_cluster(target: KubeTarget, token: str | None) -> ClusterApi:
    """The control plane of ``target`` through its API server; exit 1 saying why not."""
    from tulle.kube.cluster import Cluster, ClusterError, ControlPlaneProxy

    try:
        cluster = Cluster.connect(target.kubeconfig, target.context)
    except ClusterError as error:
        raise fail(f"error: {error}") from None
    credential = token.strip() if token else None
    proxy = ControlPlaneProxy(cluster, target.namespace, credential)
    return ClusterApi(cluster, proxy, credential is not None)


def connect(target: KubeTarget | None, server: str, token: str | None) -> Api:
    """The API the options name: local, or a cluster's."""
    if target is None:
        return LocalApi(server, token)
    return connect_cluster(target, token)


def connect_by_options(
    server: str,
    token: str | None,
    kube: bool,
    context: str | None,
    kubeconfig: Path | None,
    namespace: str | None,
) -> Api:
    """The API a command's options name (``--server``/``--token``, or ``--kube``,
    ``--context``, ``--kubeconfig``, ``--namespace``): :func:`kube_target`, then
    :func:`connect`. Close it when done."""
    return connect(kube_target(kube, context, kubeconfig, namespace, server), server, token)
