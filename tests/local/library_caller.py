"""A library-mode app for tests/local/test_rotation.py: ``GET /call/<path>`` calls
``http://<TARGET>/<path>`` through ``tulle.client`` (one AsyncClient, so its pool keeps its mTLS
connections alive) and answers with the callee's status, or 502 and the mesh's reason when the
mesh failed the call. Serves plain HTTP/1.1 on ``PORT`` with uvicorn."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

import tulle.client

Message = MutableMapping[str, Any]
TARGET = os.environ.get("TARGET", "backend:8080")


class Caller:
    """The app: every request becomes one call through the mesh."""

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
                    self.client = tulle.client.AsyncClient(timeout=30)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.client is not None:
                        await self.client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, body = 200, b"ready\n"
        if scope["path"].startswith("/call/"):
            status, body = await self.call(scope["path"][len("/call") :])
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def call(self, path: str) -> tuple[int, bytes]:
        assert self.client is not None
        try:
            response = await self.client.get(f"http://{TARGET}{path}")
        except tulle.client.MeshError as error:
            return 502, f"mesh: {error.reason}\n".encode()
        return response.status_code, response.content


def main() -> None:
    uvicorn.run(Caller(), host="127.0.0.1", port=int(os.environ["PORT"]), log_level="warning",
                access_log=False)  # fmt: skip


if __name__ == "__main__":
    main()
