"""A library-mode service: a plain ASGI app that calls other services through ``tulle.client``
(no sidecar, no extra hop) and serves its own requests behind ``tulle.client.asgi.MeshMiddleware``
(the port's inbound policy, the callee's metrics, and its endpoint registered with the control
plane while it runs) under ``tulle.client.uvicorn`` (uvicorn whose port terminates mTLS as the
mesh says: STRICT, PERMISSIVE or DISABLE, with the workload's certificate when it has one).

    TULLE_XDS_ADDRESS=127.0.0.1:15010 TULLE_SERVER=http://127.0.0.1:15014 \\
    TULLE_NODE_ID='library~127.0.0.1~hello-0.default~default.svc.cluster.local' \\
    TULLE_SERVICE=hello TULLE_SERVICE_PORT=8080 PORT=8081 TULLE_METRICS_PORT=9091 \\
        python examples/library/app.py

With an identity (the control plane's secure xDS port, 15012, its trust bundle and a bootstrap
token: ``TULLE_XDS_ROOT_CERT=.../root-cert.pem TULLE_TOKEN_FILE=...``, as ``tulle up`` sets them)
the app gets a certificate from the mesh CA and its port speaks mTLS.

``GET /`` answers who it is and who called (the caller's workload, from the mesh, and the
identity its certificate proved: ``X-Forwarded-Client-Cert``);
``GET /call?url=http://catalog:8080/items`` calls that URL through the mesh and answers what came
back, or the mesh's reason when the mesh failed the call."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

import tulle.client
import tulle.client.uvicorn
from tulle.client.asgi import MeshMiddleware

Message = MutableMapping[str, Any]
WORKLOAD = tulle.client.get_runtime().node.workload


class Hello:
    """The app: no mesh code except the client it calls out with."""

    def __init__(self) -> None:
        self.client: tulle.client.AsyncClient | None = None

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.client = tulle.client.AsyncClient(timeout=10)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.client is not None:
                        await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        if scope["path"] == "/call":
            url = parse_qs(scope["query_string"].decode()).get("url", [""])[0]
            answer = await self.call(url)
        else:
            answer = {
                "workload": WORKLOAD,
                "path": scope["path"],
                "caller": headers.get("x-tulle-source-workload", ""),
            }
            if "x-forwarded-client-cert" in headers:  # over mTLS: who the caller proved to be
                answer["client_cert"] = headers["x-forwarded-client-cert"]
        body = json.dumps(answer).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def call(self, url: str) -> dict[str, Any]:
        assert self.client is not None
        try:
            response = await self.client.get(url)
        except tulle.client.MeshError as error:
            return {"error": error.reason, "status": error.status}
        return {"status": response.status_code, "body": response.json()}


app = MeshMiddleware(Hello())


def main() -> None:
    port = int(os.environ.get("PORT", "8081"))
    tulle.client.uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning",
                             access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
