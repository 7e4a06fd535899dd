"""The API server's service proxy for tests/kube's KMock, as kube-apiserver serves it.

KMock has no ``services/proxy`` subresource (it reads ``/api/v1/namespaces/NS/services/
http:NAME:PORT/proxy/PATH`` as a read of a Service with an odd name). :class:`ServiceProxy`
adds a handler for those paths that does what kube-apiserver does with them:

- the name is ``[scheme:]service[:port]`` (port by name or number, the scheme http unless
  given); an unknown Service is 404, a port it does not have is 503 (``no endpoints`` as the
  API server words it once it cannot resolve one), as is a Service without a ready endpoint;
- the endpoint comes from the Service's EndpointSlices (label ``kubernetes.io/service-name``),
  a ready one (``conditions.ready`` not false) with the slice's port of that name;
- the request goes on to that address with its method, the rest of the path, the query and
  the body; ``Authorization`` is removed (kube-apiserver's authentication filter deletes it
  once it has authenticated the user) and so are hop-by-hop headers; other headers pass;
- the endpoint's answer comes back with its status, content type and body.

What it does not do: authorization (KMock has no RBAC: ``get services/proxy`` is always
allowed here), HTTPS to the endpoint, upgrades (websockets), redirects rewriting. The
endpoints are real processes on loopback: the EndpointSlices a test writes name 127.0.0.1 and
the port a real ``tulle controlplane`` listens on."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import kmock
from kmock._internal.rendering import Response  # not in kmock's __all__

from tests.kube.kmock_server import KubeApi

PATH = re.compile(r"/api/v1/namespaces/([^/]+)/services/([^/]+)/proxy(/.*)?")
HOP_BY_HOP = frozenset(
    {
        "authorization",  # removed by the API server's authentication, not a hop-by-hop header
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
        "trailer", "transfer-encoding", "upgrade", "host", "content-length",
    }
)  # fmt: skip
SERVICES = kmock.resource("v1/services")
SLICES = kmock.resource("discovery.k8s.io/v1/endpointslices")


def _status(code: int, reason: str, message: str) -> Response:
    """A ``Status`` answer, as the API server words its own refusals."""
    body = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return Response(status=code, payload=body)


@dataclass
class ServiceProxy:
    """The handler, and the requests it forwarded (method, path, headers as the endpoint got
    them), for tests to look at."""

    forwarded: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)

    def install(self, api: KubeApi) -> None:
        """Serve the service proxy on ``api`` from now on."""

        async def add() -> None:
            api.emulator[PATH] << self._forwarder(api)

        api.call(add)

    def _forwarder(self, api: KubeApi) -> Any:
        async def forward(request: kmock.Request) -> Response:
            return await self.forward(api, request)

        return forward

    async def forward(self, api: KubeApi, request: kmock.Request) -> Response:
        """One proxied request."""
        found = PATH.fullmatch(request.url.path)
        assert found is not None
        namespace, target, rest = found.group(1), found.group(2), found.group(3) or "/"
        parts = target.split(":")
        scheme = parts.pop(0) if len(parts) == 3 else "http"
        service_name, port = parts[0], parts[1] if len(parts) > 1 else ""
        objects = api.emulator.objects
        service = next(
            (
                obj.raw
                for (res, ns, name), obj in list(objects.items())
                if res == SERVICES and ns == namespace and name == service_name and not obj.deleted
            ),
            None,
        )
        if service is None:
            return _status(404, "NotFound", f'services "{service_name}" not found')
        if scheme != "http":
            return _status(503, "ServiceUnavailable", f"{scheme}: not emulated here")
        ports = (service.get("spec") or {}).get("ports") or []
        chosen = next(
            (p for p in ports if not port or p.get("name") == port or str(p.get("port")) == port),
            None,
        )
        address = None
        if chosen is not None:
            address = self._endpoint(objects, namespace, service_name, chosen.get("name", ""))
        if address is None:
            return _status(
                503, "ServiceUnavailable", f'no endpoints available for service "{target}"'
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        url = f"http://{address[0]}:{address[1]}{rest}"
        self.forwarded.append((str(request.method.value), rest, dict(headers)))
        async with httpx.AsyncClient(timeout=30.0) as client:
            try:
                answer = await client.request(
                    str(request.method.value),
                    url,
                    params=dict(request.params),
                    headers=headers,
                    content=request.body or None,
                )
            except httpx.HTTPError as error:
                return _status(503, "ServiceUnavailable", f"error trying to reach service: {error}")
        content_type = answer.headers.get("content-type", "application/octet-stream")
        return Response(
            status=answer.status_code,
            headers={"Content-Type": content_type},
            payload=answer.content,
        )

    @staticmethod
    def _endpoint(
        objects: Any, namespace: str, service: str, port_name: str
    ) -> tuple[str, int] | None:
        """A ready address of the Service and the slice's port of ``port_name``."""
        for (res, ns, _), obj in list(objects.items()):
            if res != SLICES or ns != namespace or obj.deleted:
                continue
            raw = obj.raw
            labels = (raw.get("metadata") or {}).get("labels") or {}
            if labels.get("kubernetes.io/service-name") != service:
                continue
            number = next(
                (p.get("port") for p in raw.get("ports") or () if p.get("name", "") == port_name),
                None,
            )
            if number is None:
                continue
            for endpoint in raw.get("endpoints") or ():
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                for address in endpoint.get("addresses") or ():
                    return str(address), int(number)
        return None
