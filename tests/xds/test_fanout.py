"""The ADS server's fan-out, driven through its stream handler without sockets: what every
stream of a group shares is computed and serialized once per version, each stream gets it with a
nonce of its own, and the xDS rules hold per stream (a NACK keeps the last good version)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import grpc
import pytest
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_components_pb2, route_pb2
from envoy.service.discovery.v3 import discovery_pb2

from tulle.api.normalize import build_model
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import view_of
from tulle.xds import offers
from tulle.xds.node import NodeInfo, parse_node_id
from tulle.xds.server import AdsServer
from tulle.xds.tuning import YOUNG_PER_STREAM
from tulle.xds.types import LISTENER, ROUTE

CLIENTS = 50


class Source:
    """One listener and one route whose virtual host's name says the route's generation."""

    def __init__(self) -> None:
        self.generation = 1
        self.calls: Counter[str] = Counter()

    def resources(self, node: NodeInfo, type_url: str) -> Mapping[str, Any]:
        self.calls[type_url] += 1
        if type_url == LISTENER:
            return {"l": listener_pb2.Listener(name="l")}
        if type_url == ROUTE:
            host = route_components_pb2.VirtualHost(name=f"v{self.generation}", domains=["*"])
            return {"r": route_pb2.RouteConfiguration(name="r", virtual_hosts=[host])}
        return {}


class AbortError(Exception):
    """What grpcio's ``context.abort`` raises."""


class Client:
    """One ADS stream, driven directly: the server's handler runs as a task and reads and writes
    through this object, which stands for grpcio's servicer context."""

    def __init__(self, server: AdsServer, index: int) -> None:
        self.node_id = f"proxyless~10.0.0.{index}~app-{index}.default~default.svc.cluster.local"
        self._requests: asyncio.Queue[Any] = asyncio.Queue()
        self._responses: asyncio.Queue[bytes] = asyncio.Queue()
        self._first = True
        self._reads = 0
        self.aborted: tuple[Any, str] | None = None
        self._server = server
        self._handler = asyncio.create_task(server.stream(None, self))

    # --- the servicer context's side ------------------------------------------------------

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    async def read(self) -> Any:
        if self._reads:
            self._requests.task_done()  # the server asks for the next: it handled the last
        self._reads += 1
        return await self._requests.get()

    async def write(self, data: bytes) -> None:
        self._responses.put_nowait(data)

    async def abort(self, code: Any, details: str) -> None:
        self.aborted = (code, details)
        raise AbortError(details)

    # --- the client's side ----------------------------------------------------------------

    def send(self, type_url: str, names: list[str], ack: Any = None, error: str = "") -> None:
        request = discovery_pb2.DiscoveryRequest(type_url=type_url, resource_names=names)
        if ack is not None:
            request.version_info, request.response_nonce = ack.version_info, ack.nonce
        if error:
            request.error_detail.message = error
        if self._first:
            request.node.id, self._first = self.node_id, False
        self.send_bytes(request.SerializeToString())

    def send_bytes(self, data: bytes) -> None:
        self._requests.put_nowait(data)

    async def receive(self) -> Any:
        data = await asyncio.wait_for(self._responses.get(), 5)
        return discovery_pb2.DiscoveryResponse.FromString(data)

    async def nothing_more(self) -> bool:
        """True once the server has handled every request sent and written everything due, and
        nothing came (a response would only come from a push or a request)."""
        await self._requests.join()
        (connection,) = [c for c in self._server.connections.values() if c.node.id == self.node_id]
        await connection.writer.flush()
        return self._responses.empty()

    def disconnect(self) -> None:
        """Go away as a client whose connection drops: grpcio cancels the call's task."""
        self._handler.cancel()

    async def close(self) -> None:
        self._requests.put_nowait(grpc.aio.EOF)
        await asyncio.wait_for(self._handler, 5)


async def subscribed(server: AdsServer, count: int) -> list[Client]:
    """``count`` clients holding the listener and the route, all ACKed."""
    clients = [Client(server, index) for index in range(count)]
    for client in clients:
        client.send(LISTENER, ["l"])
        client.send(LISTENER, ["l"], await client.receive())
        client.send(ROUTE, ["r"])
        client.send(ROUTE, ["r"], await client.receive())
    return clients


def counting_serialize(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Count each resource's serializations, by name."""
    counts: Counter[str] = Counter()
    original = offers.serialize

    def serialize(message: Any) -> bytes:
        counts[message.name] += 1
        return original(message)

    monkeypatch.setattr(offers, "serialize", serialize)
    return counts


@pytest.fixture(autouse=True)
def _collector_thresholds() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)


def test_a_push_serializes_once_per_version_and_each_stream_gets_its_own_nonce(monkeypatch):
    async def scenario() -> None:
        source = Source()
        server = AdsServer(source)
        server.holds_collector = True
        clients = await subscribed(server, CLIENTS)
        assert len(server.connections) == CLIENTS
        threshold = gc.get_threshold()
        serialized = counting_serialize(monkeypatch)
        source.calls.clear()
        bodies_before = server.catalog.serialized

        source.generation = 2
        server.push()
        # Young collections are held off while the push's writes are in flight, then allowed.
        assert gc.get_threshold()[0] >= YOUNG_PER_STREAM * CLIENTS
        responses = [await client.receive() for client in clients]
        for connection in server.connections.values():
            await connection.writer.flush()
        assert gc.get_threshold() == threshold

        # One look-up per type for the whole group, each resource serialized once, and one
        # new response body: the route's (the listener's version did not change).
        assert source.calls == Counter({LISTENER: 1, ROUTE: 1})
        assert serialized == Counter({"l": 1, "r": 1})
        assert server.catalog.serialized == bodies_before + 1
        assert {r.type_url for r in responses} == {ROUTE}
        assert len({r.version_info for r in responses}) == 1
        assert (
            route_pb2.RouteConfiguration.FromString(responses[0].resources[0].value)
            == (source.resources(NodeInfo("n", "proxyless", "", "p", "default"), ROUTE)["r"])
        )
        # The same bytes for every stream but for the nonce, which each stream numbers itself.
        for response in responses:
            response.ClearField("nonce")
        assert len({r.SerializeToString() for r in responses}) == 1
        for client in clients:
            assert await client.nothing_more()
            await client.close()

    asyncio.run(scenario())


def test_a_nack_keeps_the_last_good_version_and_only_a_newer_one_is_sent():
    async def scenario() -> None:
        source = Source()
        server = AdsServer(source)
        refusing, accepting = await subscribed(server, 2)
        source.generation = 2
        server.push()
        bad = await refusing.receive()
        refusing.send(ROUTE, ["r"], bad, error="no such cluster")
        accepting.send(ROUTE, ["r"], await accepting.receive())
        assert await refusing.nothing_more()  # the refused version is not sent again

        server.push()  # nothing changed: nothing is sent, to either
        assert await refusing.nothing_more()
        assert await accepting.nothing_more()
        (connection,) = [c for c in server.connections.values() if c.node.id == refusing.node_id]
        state = connection.session.types[ROUTE]
        assert state.nack == "no such cluster"
        assert state.acked_version != bad.version_info

        source.generation = 3
        server.push()
        fixed = await refusing.receive()
        assert fixed.version_info not in (bad.version_info, state.acked_version)
        assert (await accepting.receive()).version_info == fixed.version_info
        for client in (refusing, accepting):
            await client.close()

    asyncio.run(scenario())


def test_a_request_that_is_not_a_discovery_request_ends_the_stream_as_invalid():
    async def scenario() -> tuple[Any, str] | None:
        server = AdsServer(Source())
        client = Client(server, 1)
        client.send(LISTENER, ["l"])
        await client.receive()
        client.send_bytes(b"\xff\xff not protobuf")
        with pytest.raises(AbortError):
            await asyncio.wait_for(client._handler, 5)
        assert not server.connections  # and it is forgotten
        return client.aborted

    aborted = asyncio.run(scenario())
    assert aborted is not None
    code, details = aborted
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("bad request: ")


def test_the_control_planes_translation_depends_only_on_what_share_key_keeps():
    """Nodes of one workload that differ in address and replica share one offer: the translator
    must see them as the same node."""
    snapshot = build_snapshot(1, build_model(()), ())
    for mode in ("sidecar", "library", "proxyless"):
        one = parse_node_id(f"{mode}~10.0.0.1~cart-v1-0.shop~shop.svc.cluster.local")
        other = parse_node_id(f"{mode}~10.0.0.2~cart-v1-7.shop~shop.svc.cluster.local")
        assert offers.share_key(one) == offers.share_key(other)
        assert view_of(snapshot, one) == view_of(snapshot, other)


def test_a_stream_gone_in_the_middle_of_a_push_does_not_keep_collections_held():
    async def scenario() -> None:
        source = Source()
        server = AdsServer(source)
        server.holds_collector = True
        gone, *staying = await subscribed(server, CLIENTS)
        threshold = gc.get_threshold()
        source.generation = 2
        server.push()  # every stream's write is queued, none has started
        (connection,) = [c for c in server.connections.values() if c.node.id == gone.node_id]
        connection.writer.cancel()  # as the stream's end does, before its writer ever ran
        gone.disconnect()
        for client in staying:
            await client.receive()
        for connection in server.connections.values():
            await connection.writer.flush()
        with pytest.raises(asyncio.CancelledError):
            await gone.close()
        assert len(server.connections) == CLIENTS - 1
        assert gc.get_threshold() == threshold

    asyncio.run(scenario())
