"""httpx transports that send through the mesh engine in-process: routing, splits, retries,
timeouts, breakers, outlier detection, faults, rate limits and load balancing, exactly as the
sidecar's HTTP proxy listener applies them (the same route table, ``http_proxy``). One async
implementation serves both: the sync transport runs it on the runtime's own event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import httpx

from tulle.client.errors import MeshError, MeshNotReadyError
from tulle.client.runtime import MeshRuntime, get_runtime
from tulle.codec.http1 import end_to_end
from tulle.engine.message import ByteStream, Request, Response, finished
from tulle.engine.tasks import resolver

ROUTE_TABLE = "http_proxy"  # the library routes as the sidecar's HTTP proxy listener does
LISTENER = "library"


def mesh_request(request: httpx.Request, body: bytes) -> Request:
    """An httpx request as the engine sees it."""
    headers = [
        (name.decode("latin-1").lower(), value.decode("latin-1"))
        for name, value in request.headers.raw
    ]
    headers = [(k, v) for k, v in end_to_end(headers) if k not in ("host", "content-length")]
    url = request.url
    return Request(request.method, url.raw_path.decode("ascii"), url.netloc.decode("ascii"),
                   headers, body)  # fmt: skip


class _Body(httpx.AsyncByteStream):
    """A response body still arriving from upstream; ``finished`` is told how many bytes the
    app got, once, when the body ends or is closed (the request's metrics and log entry)."""

    def __init__(
        self, response: Response, stream: ByteStream, finished: Callable[[int], None]
    ) -> None:
        self.response, self.stream = response, stream
        self.finished: Callable[[int], None] | None = finished
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self.stream:
            self.sent += len(chunk)
            yield chunk
        self._finish()

    async def aclose(self) -> None:
        if not self.stream.complete:
            await self.response.release()
        self._finish()

    def _finish(self) -> None:
        finished, self.finished = self.finished, None
        if finished is not None:
            finished(self.sent)


class Exchanger:
    """Carries one httpx request through the engine of the running loop."""

    def __init__(self, runtime: MeshRuntime) -> None:
        self.runtime = runtime
        self._passthrough: httpx.AsyncHTTPTransport | None = None

    async def exchange(self, request: httpx.Request, body: bytes, buffer: bool) -> httpx.Response:
        """The response, or MeshError when the mesh failed the request. ``buffer``: read a
        streamed body whole (for the sync transport, whose caller is on another thread)."""
        if request.url.scheme != "http":  # TLS origination is not the engine's job
            if self._passthrough is None:
                self._passthrough = httpx.AsyncHTTPTransport()
            return await self._passthrough.handle_async_request(request)
        runtime = self.runtime
        binding = runtime.binding()
        if not binding.ready.is_set():
            try:
                await asyncio.wait_for(binding.ready.wait(), runtime.settings.ready_timeout)
            except TimeoutError:
                raise MeshNotReadyError(runtime.not_ready_reason(), request) from None
        outgoing = mesh_request(request, body)
        started = time.time()
        answer: asyncio.Future[Response] = binding.loop.create_future()
        binding.engine.dispatch(ROUTE_TABLE, outgoing, resolver(answer))
        response = await answer
        content = response.body
        if isinstance(content, ByteStream) and buffer:
            content = b"".join([chunk async for chunk in content])

        def record(sent: int) -> None:
            done = finished(LISTENER, outgoing, response, started, time.time(), sent)
            runtime.metrics.record(done)
            runtime.log.record(done)
            if done.span is not None:
                runtime.tracing.record(done)
            tap = runtime.tap
            if tap.active:
                tap.publish(done)

        if isinstance(content, bytes):
            record(len(content))
        if response.reason:  # the mesh's own answer
            raise MeshError(response.reason, response.status, response.flag, request)
        extensions = {"http_version": b"HTTP/1.1"}
        if isinstance(content, ByteStream):  # recorded when the app has read or closed it
            stream = _Body(response, content, record)
            return httpx.Response(
                response.status, headers=response.headers, stream=stream, extensions=extensions
            )
        return httpx.Response(
            response.status, headers=response.headers, content=content, extensions=extensions
        )

    async def aclose(self) -> None:
        """Close the idle connections of this event loop's pool and the pass-through
        transport."""
        self.runtime.binding().pool.close()
        if self._passthrough is not None:
            await self._passthrough.aclose()


class AsyncMeshTransport(httpx.AsyncBaseTransport):
    """For ``httpx.AsyncClient(transport=AsyncMeshTransport())``."""

    def __init__(self, runtime: MeshRuntime | None = None) -> None:
        self._exchanger = Exchanger(runtime or get_runtime())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self._exchanger.exchange(request, await request.aread(), buffer=False)

    async def aclose(self) -> None:
        await self._exchanger.aclose()


class MeshTransport(httpx.BaseTransport):
    """For ``httpx.Client(transport=MeshTransport())``: the request runs on the runtime's
    event loop; the calling thread waits for it."""

    def __init__(self, runtime: MeshRuntime | None = None) -> None:
        self._runtime = runtime or get_runtime()
        self._exchanger = Exchanger(self._runtime)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        work = self._exchanger.exchange(request, request.read(), buffer=True)
        return asyncio.run_coroutine_threadsafe(work, self._runtime.loop).result()

    def close(self) -> None:
        if self._runtime.loop.is_running():
            asyncio.run_coroutine_threadsafe(self._exchanger.aclose(), self._runtime.loop)
