"""A person's view of a cluster, for the CLI: raw reads from the API server and calls to the
control plane through the API server's service proxy, with nothing but their kubeconfig.

``tulle proxy-status --kube`` (and ``proxy-config``, ``check``) reach the control plane's HTTP
API as ``istioctl`` reaches istiod, through the API server: ``/api/v1/namespaces/<ns>/services/
http:tulle-controlplane:http-api/proxy/<path>``. The API server authenticates the user with the
kubeconfig's credentials (lightkube applies them: token, client certificate, exec plugin),
checks that RBAC lets them ``get services/proxy`` there, and forwards the request to a ready
endpoint of the Service. So it works wherever ``kubectl`` works, with no network path to the
pods and no port-forward. The API server removes ``Authorization`` before it forwards (it
carried the user's credential), so the control plane's admin token, read from the Secret
``tulle-admin-token`` with the same credentials, travels in ``X-Tulle-Token``.

Synchronous: a CLI command makes a few requests, one after another."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx2
from lightkube import Client
from lightkube.config import client_adapter

from tulle.kube.admin_token import AdminTokenError, AdminTokenSecret
from tulle.kube.apply import KubeInstallError, user_config
from tulle.kube.install.names import CONTROL_PLANE

API_PORT_NAME = "http-api"
"""The name of the control plane's HTTP API port on its Service (tulle install's)."""


class ClusterError(RuntimeError):
    """The cluster cannot be reached, or refused a read: what, and why."""


@dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, content type and body."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ``ValueError`` when it is not."""
        return json.loads(self.body)

    def message(self) -> str:
        """A Kubernetes Status's message, a JSON error's, or the start of the body."""
        try:
            data = self.json()
        except ValueError:
            return self.body[:200].decode(errors="replace").strip() or f"HTTP {self.status}"
        if isinstance(data, dict):
            for key in ("message", "error"):
                if data.get(key):
                    return str(data[key])
        return self.body[:200].decode(errors="replace")


def service_proxy_path(namespace: str, service: str, port: str, path: str) -> str:
    """The API server's path that proxies to ``path`` of ``service``'s ``port`` (plain HTTP)."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r}: a path starts with /")
    target = quote(f"http:{service}:{port}", safe=":")
    return f"/api/v1/namespaces/{quote(namespace)}/services/{target}/proxy{path}"


class Cluster:
    """The API server of a kubeconfig's context, as the user."""

    def __init__(self, config: Any, where: str, timeout: float = 30.0) -> None:
        self.where = where  # "context NAME (URL)", for messages
        self._config = config
        self._http = client_adapter.Client(
            config, client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout))
        )

    @classmethod
    def connect(cls, kubeconfig: Path | None, context: str | None) -> Cluster:
        """The cluster of ``kubeconfig`` (else ``$KUBECONFIG``, else ``~/.kube/config``) and
        its current context or ``context``; ``ClusterError`` saying what is wrong."""
        try:
            config, where = user_config(kubeconfig, context)
        except KubeInstallError as error:
            raise ClusterError(str(error)) from None
        return cls(config, where)

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request to the API server; ``ClusterError`` when it cannot be reached."""
        try:
            response = self._http.request(method, path, params=params, headers=headers)
        except httpx2.HTTPError as error:
            raise ClusterError(f"cannot reach the API server ({self.where}): {error}") from None
        content_type = response.headers.get("content-type", "").split(";")[0].strip()
        return Answer(response.status_code, content_type, response.content)

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any] | None:
        """The JSON object at ``path``; None for 404; ``ClusterError`` for another refusal."""
        answer = self.request("GET", path, params=params)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise ClusterError(f"GET {path}: HTTP {answer.status}: {answer.message()}")
        try:
            data = answer.json()
        except ValueError:
            raise ClusterError(f"GET {path}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise ClusterError(f"GET {path}: the answer is not a JSON object")
        return data

    def items(self, path: str, params: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """The items of the list at ``path`` (every page); [] when the kind is not served."""
        found: list[dict[str, Any]] = []
        query = {**(params or {}), "limit": "500"}
        while True:
            data = self.get(path, query)
            if data is None:
                return found
            found.extend(item for item in data.get("items") or () if isinstance(item, dict))
            token = (data.get("metadata") or {}).get("continue")
            if not token:
                return found
            query = {**query, "continue": str(token)}

    def admin_token(self, namespace: str) -> str:
        """The control plane's admin token, from its Secret, read as the user."""
        secret = AdminTokenSecret(Client(self._config, timeout=httpx2.Timeout(30.0)), namespace)
        try:
            token = secret.read()
        except AdminTokenError as error:
            hint = ""
            if error.status == 403:
                hint = (
                    f" (your Kubernetes user may not read it: ask for get on secrets/"
                    f"{secret.name} in {namespace}, or pass the token with --token)"
                )
            raise ClusterError(f"{error}{hint}") from None
        finally:
            secret.close()
        if token is None:
            raise ClusterError(
                f"no {secret} ({self.where}): is the control plane installed in {namespace} "
                "and started? (it creates the Secret at start; tulle install --namespace "
                f"{namespace})"
            )
        return token

    def close(self) -> None:
        """Close the HTTP connections."""
        self._http.close()


class ControlPlaneProxy:
    """The control plane's HTTP API in ``namespace``, through the API server's service
    proxy, authenticated with ``token`` (the Secret's when None)."""

    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        token: str | None = None,
        service: str = CONTROL_PLANE,
    ) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.service = service
        self._token = token

    @property
    def where(self) -> str:
        """Where the API is, for messages."""
        return (
            f"Service {self.namespace}/{self.service} port {API_PORT_NAME} through the API "
            f"server ({self.cluster.where})"
        )

    def request(
        self, method: str, path: str, params: dict[str, str] | None = None, auth: bool = True
    ) -> Answer:
        """``method path`` on the control plane; the admin token sent unless ``auth`` is
        False (``/healthz``, ``/metrics``)."""
        headers = {}
        if auth:
            if self._token is None:
                self._token = self.cluster.admin_token(self.namespace)
            headers["x-tulle-token"] = self._token
        proxied = service_proxy_path(self.namespace, self.service, API_PORT_NAME, path)
        return self.cluster.request(method, proxied, params=params, headers=headers)


__all__ = [
    "Answer",
    "Cluster",
    "ClusterError",
    "ControlPlaneProxy",
    "service_proxy_path",
]
