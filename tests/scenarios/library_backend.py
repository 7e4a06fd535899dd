"""The parity suite's library-mode backend: an ASGI app behind ``tulle.client.asgi.MeshMiddleware``
(the port's inbound policy, its endpoint registered while it runs) served by
``tulle.client.uvicorn`` (the port terminates mTLS as the mesh says, with the workload's
certificate), answering as ``tests/e2e/http_backend.py`` does: ``x-backend: <name>`` and JSON of
its name, the path and the request headers. Settings from the environment: ``TULLE_*`` (the
library's), ``PORT`` and ``BACKEND_NAME``. Runs until SIGTERM."""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import tulle.client.uvicorn
from tulle.client.asgi import MeshMiddleware

Message = MutableMapping[str, Any]
NAME = os.environ.get("BACKEND_NAME", "library")


async def echo(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[Message]],
    send: Callable[[Message], Awaitable[None]],
) -> None:
    if scope["type"] == "lifespan":  # the middleware registers the endpoint on startup
        while True:
            message = await receive()
            kind = message["type"].rsplit(".", 1)[-1]
            await send({"type": f"{message['type']}.complete"})
            if kind == "shutdown":
                return
    if scope["type"] != "http":
        return
    received = {k.decode(): v.decode() for k, v in scope["headers"]}
    body = json.dumps({"name": NAME, "path": scope["path"], "headers": received}).encode()
    headers = [(b"content-type", b"application/json"), (b"x-backend", NAME.encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = MeshMiddleware(echo)

if __name__ == "__main__":
    tulle.client.uvicorn.run(app, host="127.0.0.1", port=int(os.environ["PORT"]),
                             log_level="warning", access_log=False)  # fmt: skip
