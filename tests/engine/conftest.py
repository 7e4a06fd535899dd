"""Engine tests: config written as Tulle YAML, translated by the control plane into real xDS
resources, compiled by the engine; upstreams are scripted functions (no sockets) and time is a
clock the test moves. Every test runs twice: through the coroutine path (``Engine.handle``) and
through the callback fast path (``Engine.dispatch`` with a starter), which must agree."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.engine.cluster_config import ClusterSpec, EndpointSpec
from tulle.engine.compile import compile_resources
from tulle.engine.message import Request, Response, UpstreamError
from tulle.engine.outbound import Engine, Outcome

HOST = "web.default.svc.cluster.local"


def workload(name: str, port: int = 8080) -> str:
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  service: web
  command: [web]
  ports: [{{name: http, port: {port}}}]
  labels: {{version: {name}}}
---
"""


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


Behaviour = Callable[[EndpointSpec, Request], Response]


@dataclass
class Upstreams:
    """Scripted endpoints: by ``address:port`` a function from request to response (or raise).
    An endpoint in ``delay`` answers that many seconds later; one in ``held`` answers once the
    test calls ``release()`` (each call waiting meanwhile is in ``waiting``)."""

    behaviour: dict[str, Behaviour] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    delay: dict[str, float] = field(default_factory=dict)
    held: set[str] = field(default_factory=set)
    waiting: list[asyncio.Future[None]] = field(default_factory=list)

    async def send(
        self, endpoint: EndpointSpec, cluster: ClusterSpec, request: Request
    ) -> Response:
        self.calls.append(endpoint.key)
        if endpoint.key in self.held:
            await self._hold()
        elif endpoint.key in self.delay:
            await asyncio.sleep(self.delay[endpoint.key])
        handler = self.behaviour.get(endpoint.key, ok)
        return handler(endpoint, request)

    def _hold(self) -> asyncio.Future[None]:
        released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiting.append(released)
        return released

    def release(self) -> None:
        """Let every held call that is still waiting answer."""
        waiting, self.waiting = self.waiting, []
        for released in waiting:
            if not released.done():
                released.set_result(None)

    def start(
        self,
        endpoint: EndpointSpec,
        cluster: ClusterSpec,
        request: Request,
        callback: Callable[[Outcome], None],
    ) -> Callable[[], None]:
        """``send`` for the fast path: the outcome arrives in a loop callback (after the
        endpoint's delay); the returned function abandons it."""
        self.calls.append(endpoint.key)
        handler = self.behaviour.get(endpoint.key, ok)

        def answer() -> None:
            outcome: Outcome
            try:
                outcome = handler(endpoint, request)
            except UpstreamError as failure:
                outcome = failure
            callback(outcome)

        if endpoint.key in self.held:
            released = self._hold()

            def answer_when_released(_: object) -> None:
                if not released.cancelled():
                    answer()

            def abandon() -> None:
                released.cancel()

            released.add_done_callback(answer_when_released)
            return abandon
        delay = self.delay.get(endpoint.key, 0)
        return asyncio.get_running_loop().call_later(delay, answer).cancel


def ok(endpoint: EndpointSpec, request: Request) -> Response:
    return Response(200, [("x-served-by", endpoint.key)], endpoint.key.encode())


def status(code: int) -> Behaviour:
    def answer(endpoint: EndpointSpec, request: Request) -> Response:
        return Response(code, [("x-served-by", endpoint.key)], b"")

    return answer


def refuse(endpoint: EndpointSpec, request: Request) -> Response:
    raise UpstreamError("connect", "connection refused")


def build_engine(
    yaml_text: str,
    endpoints: dict[str, list[tuple[str, int]]],
    upstreams: Upstreams,
    clock: Clock | None = None,
    seed: int = 7,
) -> Engine:
    """An engine on the sidecar resources of ``yaml_text``, with registered endpoints by
    workload (version label)."""
    result = validate_text(yaml_text, known_hosts=[HOST])
    assert result.model is not None, [f.format() for f in result.findings]
    registered = tuple(
        Endpoint(HOST, address, port, 8080, "HTTP", (("app", "web"), ("version", version)))
        for version, members in endpoints.items()
        for address, port in members
    )
    resources = translate(
        build_snapshot(1, result.model, registered), NodeView("sidecar", "default")
    )
    config = compile_resources("1", resources)
    start = upstreams.start if PATH["kind"] == "callbacks" else None
    engine = Engine(upstreams.send, clock or Clock(), random.Random(seed), start)
    engine.update(config)
    return engine


PATH = {"kind": "coroutines"}


@pytest.fixture(params=["coroutines", "callbacks"])
def engine_path(request: pytest.FixtureRequest):
    """Run the test through ``handle`` and again through ``dispatch``."""
    PATH["kind"] = request.param
    yield request.param
    PATH["kind"] = "coroutines"


async def handle(engine: Engine, table: str, request: Request) -> Response:
    """One request through the path under test."""
    if engine.start is None:
        return await engine.handle(table, request)
    answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
    engine.dispatch(table, request, answer.set_result)
    return await answer


def request(path: str = "/", authority: str = "web:8080", headers: list | None = None) -> Request:
    return Request("GET", path, authority, list(headers or []))


def run(coroutine):
    return asyncio.run(coroutine)
