"""The runner's side of the service registry: it adds (POST) and removes (DELETE) each replica's
endpoints through the control plane's API, forgets a previous run's, and puts the registry right
after a control-plane restart (what changed while it was down); and what a replica's entries
are (one per port it serves, with the mTLS label when callers reach it over mTLS)."""

from __future__ import annotations

from typing import Any

import httpx

from tulle.local.plan import ReplicaPlan
from tulle.local.runtime import Replica, RunnerBase


class Registrations(RunnerBase):
    """Registering replicas' endpoints in the control plane's registry."""

    async def _put_registry_right(self) -> None:
        """What changed while the control plane was down: every replica that should be
        registered is, and endpoints of this mesh's workloads that no replica should have any
        more (a replica restarted elsewhere, or stopped) are removed."""
        api = f"{self.state.api}/api/v1/endpoints"
        async with self.registry_lock:
            try:
                items = (await self.api.get(api)).json()["items"]
            except (httpx.HTTPError, ValueError, KeyError) as error:
                self.echo(f"tulle up: reading the registry failed: {error}")
                return
            wanted = {(r.plan.ip, port): r for r in self.replicas if r.registered
                      for port, _, _ in r.plan.endpoints}  # fmt: skip
            workloads = {r.plan.workload.name for r in self.replicas}
            present = set()
            for item in items:
                key = (item.get("address"), item.get("port"))
                present.add(key)
                if item.get("workload") in workloads and key not in wanted:
                    await self._send_registration("DELETE", _identity(item), "stale endpoint")
            for replica in {id(r): r for k, r in wanted.items() if k not in present}.values():
                for body in registrations(replica.plan, replica.status.ready):
                    await self._send_registration("POST", body, replica.plan.name)

    async def _forget_stale_endpoints(self, workloads: set[str]) -> None:
        """Endpoints a previous run of these workloads registered are gone now."""
        response = await self.api.get(f"{self.state.api}/api/v1/endpoints")
        for item in response.json()["items"]:
            if item.get("workload") in workloads:
                await self.api.request("DELETE", f"{self.state.api}/api/v1/endpoints",
                                       json=_identity(item))  # fmt: skip

    async def _register(self, replica: Replica, method: str, healthy: bool = True) -> None:
        """Add (POST) or remove (DELETE) the replica's endpoints in the service registry. The
        wish is kept: what fails while the control plane is down is done once it is back."""
        async with self.registry_lock:
            replica.registered = method == "POST"
            for body in registrations(replica.plan, healthy):
                await self._send_registration(method, body, replica.plan.name)

    async def _send_registration(self, method: str, body: dict[str, Any], who: str) -> None:
        try:
            response = await self.api.request(
                method, f"{self.state.api}/api/v1/endpoints", json=body
            )
        except httpx.HTTPError as error:
            self.echo(f"  {who}: {method} endpoint failed: {error or type(error).__name__}")
            return
        if response.is_error and not (method == "DELETE" and response.status_code == 404):
            self.echo(f"  {who}: {method} endpoint failed: {response.status_code} "
                      f"{response.text.strip()}")  # fmt: skip


def registrations(plan: ReplicaPlan, healthy: bool = True) -> list[dict[str, Any]]:
    """The registry entries of a replica: one per port it serves. A replica with a sidecar
    terminates mTLS (Istio's ``security.istio.io/tlsMode: istio`` label): clients speak mTLS to
    it; so does a proxyless one on its gRPC ports, whose ``xds=True`` grpcio server the control
    plane makes STRICT in the mesh (gRPC servers cannot be PERMISSIVE). Whether a library-mode
    app terminates TLS depends on its server (docs/security.md): its Workload's labels say."""
    workload = plan.workload
    in_mesh = dict(workload.labels, **{"security.istio.io/tlsMode": "istio"})
    return [
        {
            "service": workload.service_host, "namespace": workload.namespace,
            "address": plan.ip, "port": port, "servicePort": service_port,
            "protocol": protocol,
            "labels": in_mesh if terminates_mtls(workload.mesh, protocol)
                      else dict(workload.labels),
            "serviceAccount": workload.service_account, "workload": workload.name,
            "healthy": healthy, "locality": workload.locality,
        }
        for port, service_port, protocol in plan.endpoints
    ]  # fmt: skip


def terminates_mtls(mesh: str, protocol: str) -> bool:
    """Whether callers reach a port of a ``mesh`` workload over mTLS: every port of a sidecar's,
    a proxyless app's gRPC ports (its other ports are its own, plain text: a config warning)."""
    return mesh == "sidecar" or (mesh == "proxyless" and protocol == "GRPC")


def _identity(item: dict[str, Any]) -> dict[str, Any]:
    """The fields a DELETE of a registered endpoint needs."""
    service = str(item["service"])
    return {"service": service, "address": item["address"], "port": item["port"]}
