"""gRPC through the sidecar: a stock grpcio client speaks HTTP/2 (prior knowledge) to the proxy,
which detects it, routes by the authority, and calls real gRPC servers over HTTP/2."""

from __future__ import annotations

import collections
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import h2.config
import h2.connection
import h2.events
import httpx
import pytest

from tests.e2e.conftest import ControlPlane, Processes, sigterm_under_load, synced, wait_until
from tests.e2e.sidecar_admin import admin_post
from tests.manifests import virtual_service
from tulle.codec.http2 import Goaway, GoawayFilter

AUTHORITY = "greeter.default.svc.cluster.local:50051"


def register_greeters(plane: ControlPlane, processes: Processes, **fail_rates: float) -> None:
    for name, fail_rate in fail_rates.items():
        port = processes.greeter(name, fail_rate)
        plane.register(
            service="greeter", address="127.0.0.1", port=port, servicePort=50051, protocol="GRPC"
        )


def call_many(proxy_port: int, count: int) -> list[str]:
    """``count`` unary calls; each result is the backend's name or the status code's name."""
    results = []
    with grpc.insecure_channel(
        f"127.0.0.1:{proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
    ) as channel:
        call = channel.unary_unary("/greeter.Greeter/SayHello")
        for _ in range(count):
            try:
                results.append(call(b"hi", timeout=10).decode())
            except grpc.RpcError as error:
                results.append(error.code().name)
    return results


@pytest.fixture
def sidecar(control_plane, processes):
    def start():
        started = processes.sidecar(control_plane)
        wait_until(lambda: synced(control_plane, started.node))
        return started

    return start


def greeter_routes(plane: ControlPlane, http: str) -> None:
    plane.apply(virtual_service(http, "greeter"))


def test_unary_calls_are_balanced_over_http2(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, a=0.0, b=0.0)
    proxy = sidecar()
    results = collections.Counter(call_many(proxy.http_proxy_port, 80))
    assert set(results) == {"a", "b"}
    # Least request over two idle endpoints picks either at random: Binomial(80, 0.5), sd =
    # sqrt(80 * 0.5 * 0.5) = 4.5 calls; at least 20 each is 4.5 sd below the mean of 40 (it was
    # 40 calls and at least 10 each: 3.2 sd).
    assert min(results.values()) >= 20


def test_grpc_status_retries(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, flaky=0.5)
    greeter_routes(
        control_plane, "    - route: [{destination: {host: greeter}}]\n      retries: {attempts: 0}"
    )
    proxy = sidecar()
    without = call_many(proxy.http_proxy_port, 300)
    greeter_routes(
        control_plane,
        "    - route: [{destination: {host: greeter}}]\n      retries: {attempts: 3, retryOn: unavailable}",
    )
    wait_until(lambda: synced(control_plane, proxy.node))
    with_retries = call_many(proxy.http_proxy_port, 300)
    # Without retries a call fails with p = 0.5: sd = sqrt(300 * 0.5 * 0.5) = 8.7 calls = 2.9%;
    # ±20% is 6.9 sd. With three retries all four attempts fail with p = 0.5^4 = 6.25%: sd =
    # sqrt(300 * 0.0625 * 0.9375) = 4.2 calls = 1.4%; 15% is 6.3 sd above the mean.
    assert 0.3 <= without.count("UNAVAILABLE") / 300 <= 0.7
    assert with_retries.count("UNAVAILABLE") / 300 <= 0.15


def test_grpc_fault_abort_through_the_sidecar(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, a=0.0)
    greeter_routes(
        control_plane,
        """\
    - fault: {abort: {grpcStatus: PERMISSION_DENIED, percentage: {value: 100}}}
      route: [{destination: {host: greeter}}]""",
    )
    proxy = sidecar()
    assert set(call_many(proxy.http_proxy_port, 10)) == {"PERMISSION_DENIED"}


def test_no_route_is_a_grpc_status_with_the_reason(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, a=0.0)
    proxy = sidecar()
    with (
        grpc.insecure_channel(
            f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", "nowhere:1")]
        ) as channel,
        pytest.raises(grpc.RpcError) as failure,
    ):
        channel.unary_unary("/greeter.Greeter/SayHello")(b"hi", timeout=10)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert failure.value.details() == "no route for nowhere:1/greeter.Greeter/SayHello"


def test_server_streaming_messages_flow_as_they_come(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, a=0.0)
    proxy = sidecar()
    options = [("grpc.default_authority", AUTHORITY)]
    with grpc.insecure_channel(f"127.0.0.1:{proxy.http_proxy_port}", options=options) as channel:
        messages = channel.unary_stream("/greeter.Greeter/Stream")(b"", timeout=20)
        # The server holds the rest until Release: the first message must arrive before it.
        assert next(messages) == b"a:first"
        assert channel.unary_unary("/greeter.Greeter/Release")(b"", timeout=10) == b"released"
        assert list(messages) == [b"a:0", b"a:1", b"a:2"]


def test_bidirectional_streaming_ping_pong(control_plane, processes, sidecar):
    import queue

    register_greeters(control_plane, processes, a=0.0)
    proxy = sidecar()
    outgoing: queue.Queue[bytes | None] = queue.Queue()

    def requests():
        while (message := outgoing.get(timeout=20)) is not None:
            yield message

    options = [("grpc.default_authority", AUTHORITY)]
    with grpc.insecure_channel(f"127.0.0.1:{proxy.http_proxy_port}", options=options) as channel:
        replies = channel.stream_stream("/greeter.Greeter/Chat")(requests(), timeout=30)
        # Each message is sent only after the previous answer came back through the proxy:
        # buffering either direction would stall this conversation.
        for word in (b"ping", b"pong", b"done"):
            outgoing.put(word)
            assert next(replies) == b"a:" + word
        outgoing.put(None)
        assert list(replies) == []


def test_messages_larger_than_the_flow_control_window_pass_both_ways(
    control_plane, processes, sidecar
):
    # 3 MiB each way: far over HTTP/2's 65,535-byte initial windows on both of the sidecar's
    # connections, so every window update has to be passed on.
    register_greeters(control_plane, processes, a=0.0)
    proxy = sidecar()
    big = bytes(range(256)) * (3 * 4096)
    with grpc.insecure_channel(
        f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
    ) as channel:
        chat = channel.stream_stream("/greeter.Greeter/Chat")
        assert list(chat(iter([big, b"small", big]), timeout=20)) == [
            b"a:" + big,
            b"a:small",
            b"a:" + big,
        ]
        assert channel.unary_unary("/greeter.Greeter/SayHello")(big, timeout=20) == b"a"


def test_a_call_the_client_gives_up_on_is_cancelled_upstream(control_plane, processes, sidecar):
    # The client cancels its call (resets its stream), and the sidecar resets the upstream's
    # (as Envoy does), so the server stops working on a call nobody waits for.
    port = processes.greeter("a")
    control_plane.register(
        service="greeter", address="127.0.0.1", port=port, servicePort=50051, protocol="GRPC"
    )
    proxy = sidecar()
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as direct,
        grpc.insecure_channel(
            f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
        ) as channel,
    ):
        serving = direct.unary_unary("/greeter.Greeter/Serving")
        # No deadline (grpc-timeout would tell the server itself): the client just cancels,
        # once the call has reached the server.
        call = channel.unary_unary("/greeter.Greeter/Wait").future(b"")
        wait_until(lambda: serving(b"", timeout=5) == b"1")
        assert call.cancel()
        count = direct.unary_unary("/greeter.Greeter/Cancelled")
        wait_until(lambda: count(b"", timeout=5) == b"1")
    clusters = proxy.admin("/clusters").json()["clusters"]
    assert [c["requests"] for c in clusters if "greeter" in c["name"]] == [0]  # given back


def test_a_grpc_deadline_is_kept_by_the_sidecar(control_plane, processes, sidecar):
    # A deadline in grpc-timeout ends the call at the sidecar (DEADLINE_EXCEEDED with the
    # reason), and the upstream's stream is reset. httpx speaks HTTP/2 with no deadline of its
    # own, so the answer is the sidecar's (grpcio would give up at the same moment itself).
    port = processes.greeter("a")
    control_plane.register(
        service="greeter", address="127.0.0.1", port=port, servicePort=50051, protocol="GRPC"
    )
    proxy = sidecar()
    with httpx.Client(http1=False, http2=True, timeout=10) as client:
        answer = client.post(
            f"http://127.0.0.1:{proxy.http_proxy_port}/greeter.Greeter/Wait",
            headers={"host": AUTHORITY, "content-type": "application/grpc", "te": "trailers",
                     "grpc-timeout": "300m"},
            content=b"\x00\x00\x00\x00\x00",
        )  # fmt: skip
    assert answer.status_code == 200
    assert answer.headers["grpc-status"] == "4"  # DEADLINE_EXCEEDED
    assert answer.headers["x-tulle-error"] == (
        "grpc-timeout 0.3s exceeded (cluster outbound|50051||greeter.default.svc.cluster.local)"
    )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as direct:
        count = direct.unary_unary("/greeter.Greeter/Cancelled")
        wait_until(lambda: count(b"", timeout=5) == b"1")


def test_http2_connections_are_held_to_max_connections(control_plane, processes, sidecar):
    """One request per connection and one connection for the cluster: calls go one at a time,
    each on a new connection; one more than max pending overflows with the breaker's reason."""
    port = processes.greeter("slow", delay=1.0)
    control_plane.register(
        service="greeter", address="127.0.0.1", port=port, servicePort=50051, protocol="GRPC"
    )
    control_plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 1}
      http: {maxRequestsPerConnection: 1, http1MaxPendingRequests: 1}
"""
    )
    proxy = sidecar()
    with grpc.insecure_channel(
        f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
    ) as channel:
        call = channel.unary_unary("/greeter.Greeter/Peer")
        futures = [call.future(b"", timeout=20) for _ in range(3)]
        answers, refused = [], []
        for future in futures:
            try:
                answers.append(future.result().decode())
            except grpc.RpcError as error:
                refused.append((error.code(), error.details()))
        sequential = [call(b"", timeout=20).decode() for _ in range(2)]
    # Two served, never both at once (the server saw one call at a time), on two connections.
    assert len(answers) == 2, (answers, refused)
    assert all(answer.endswith("|1") for answer in answers), answers
    assert len({answer.split("|")[0] for answer in answers}) == 2
    # The third found the connection in use and the one pending place taken.
    assert len(refused) == 1
    code, details = refused[0]
    assert code == grpc.StatusCode.UNAVAILABLE
    assert "circuit open: max connections 1 reached" in details
    # Once the others are done, calls go through, each on a connection of its own.
    peers = {answer.split("|")[0] for answer in answers + sequential}
    assert len(peers) == 4
    clusters = proxy.admin("/clusters").json()["clusters"]
    greeter = next(c for c in clusters if c["name"].endswith("|greeter.default.svc.cluster.local"))
    assert greeter["overflows"] == 1
    assert greeter["h2_connections"] <= 1


def test_a_call_in_flight_finishes_while_its_upstream_shuts_down_gracefully(
    control_plane, processes, sidecar
):
    # grpcio's stop(grace) sends GOAWAY and gives the calls in flight the grace to finish. h2
    # would close the connection at the GOAWAY (python-hyper/h2#1181) and fail the call; the
    # pool keeps the GOAWAY from h2 and drains the connection as Envoy does.
    port = processes.greeter("slow", delay=1.0, grace=5.0)
    greeter = processes.started[-1]
    control_plane.register(
        service="greeter", address="127.0.0.1", port=port, servicePort=50051, protocol="GRPC"
    )
    greeter_routes(
        control_plane, "    - route: [{destination: {host: greeter}}]\n      retries: {attempts: 0}"
    )
    proxy = sidecar()
    with (
        grpc.insecure_channel(f"127.0.0.1:{port}") as direct,
        grpc.insecure_channel(
            f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
        ) as channel,
    ):
        call = channel.unary_unary("/greeter.Greeter/SayHello").future(b"hi", timeout=10)
        serving = direct.unary_unary("/greeter.Greeter/Serving")
        wait_until(lambda: serving(b"", timeout=5) == b"1")  # the call is in flight
        greeter.send_signal(signal.SIGTERM)
        assert call.result() == b"slow"
    assert greeter.wait(10) == 0


def test_sigterm_under_steady_grpc_load_loses_no_call(control_plane, processes):
    # The sidecar's drain sends GOAWAY on each HTTP/2 connection: calls it took finish, the
    # client opens no new stream there; afterwards its connections are refused (not taken).
    register_greeters(control_plane, processes, a=0.0)
    proxy = processes.sidecar(control_plane, "client-0", None, "--drain-seconds", "5")
    wait_until(lambda: synced(control_plane, proxy.node))

    def session(stop: threading.Event, outcomes: collections.Counter[str]) -> None:
        with grpc.insecure_channel(
            f"127.0.0.1:{proxy.http_proxy_port}", options=[("grpc.default_authority", AUTHORITY)]
        ) as channel:
            call = channel.unary_unary("/greeter.Greeter/SayHello")
            while not stop.is_set():
                try:
                    outcomes[call(b"hi", timeout=10).decode()] += 1
                except grpc.RpcError as error:
                    details = error.details() or ""
                    refused = "failed to connect" in details
                    outcomes["refused" if refused else f"{error.code().name}: {details}"] += 1
                    time.sleep(0.02)

    outcomes = sigterm_under_load(proxy.proc, session, clients=4, answered="a")
    assert set(outcomes) == {"a", "refused"}, outcomes


class RawH2Client:
    """An HTTP/2 client on a plain socket that shows the test every frame's effect: GOAWAYs are
    taken out before h2 reads (h2 would close at the first, python-hyper/h2#1181), and what h2
    queues (its PING acks among it) is written only when the test says so."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.goaways = GoawayFilter()
        self.conn.initiate_connection()
        self.send()

    def __enter__(self) -> RawH2Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self) -> None:
        self.sock.sendall(self.conn.data_to_send())

    def read(self) -> tuple[list[h2.events.Event], list[Goaway]] | None:
        """What one read brings: h2's events and the GOAWAYs (both may be empty, for part of a
        frame); None once the peer has closed the connection."""
        data = self.sock.recv(65536)
        if not data:
            return None
        kept, goaways = self.goaways.feed(data)
        return self.conn.receive_data(kept) if kept else [], goaways

    def read_until(
        self, done: Callable[[list[h2.events.Event], list[Goaway]], bool]
    ) -> tuple[list[h2.events.Event], list[Goaway]]:
        """Reads until ``done(events, goaways)`` holds for all read so far; those."""
        events: list[h2.events.Event] = []
        goaways: list[Goaway] = []
        while not done(events, goaways):
            more = self.read()
            if more is None:
                raise AssertionError(f"closed before expected: {events} {goaways}")
            events += more[0]
            goaways += more[1]
        return events, goaways

    def say_hello(self) -> int:
        """Opens a unary SayHello call (headers, one message, end of stream); its stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        headers = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", AUTHORITY),
            (":path", "/greeter.Greeter/SayHello"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
        ]
        self.conn.send_headers(stream_id, headers)
        self.conn.send_data(stream_id, b"\x00" + (2).to_bytes(4, "big") + b"hi", end_stream=True)
        return stream_id


@pytest.fixture
def drained_before_the_ping_ack(
    control_plane: ControlPlane, processes: Processes
) -> Iterator[RawH2Client]:
    """A client connected to a sidecar that was then told to drain, once it has the drain's
    first GOAWAY (which names the last possible stream: nothing is refused yet) and its PING,
    whose ack h2 has queued but the client not yet sent."""
    register_greeters(control_plane, processes, a=0.0)
    proxy = processes.sidecar(control_plane)
    wait_until(lambda: synced(control_plane, proxy.node))
    with RawH2Client(proxy.http_proxy_port) as client:
        client.read_until(
            lambda events, _: any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
        )
        client.send()
        drained = admin_post(proxy, "/drain")
        assert drained.status_code == 200
        _, first = client.read_until(
            lambda events, goaways: (
                bool(goaways) and any(isinstance(e, h2.events.PingReceived) for e in events)
            )
        )
        assert [(g.last_stream_id, g.error_code) for g in first] == [(2**31 - 1, 0)]
        yield client


def test_a_drain_takes_the_streams_a_client_opened_before_it_saw_the_goaway(
    drained_before_the_ping_ack: RawH2Client,
):
    # A stream the client opens before it acks the drain's PING (one already on its way when
    # the drain began) is taken and answered; only then does a second GOAWAY name the last
    # stream, and the connection closes once that stream is done.
    client = drained_before_the_ping_ack
    ack = client.conn.data_to_send()  # held back until the call is sent
    stream_id = client.say_hello()
    client.send()
    client.sock.sendall(ack)

    events, second = client.read_until(
        lambda events, goaways: (
            bool(goaways) and any(isinstance(e, h2.events.TrailersReceived) for e in events)
        )
    )
    answer = b"".join(
        e.data for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == stream_id
    )
    (trailers,) = [dict(e.headers) for e in events if isinstance(e, h2.events.TrailersReceived)]
    assert trailers[b"grpc-status"] == b"0"
    assert answer == b"\x00" + (1).to_bytes(4, "big") + b"a"  # one message: "a"
    assert [(g.last_stream_id, g.error_code) for g in second] == [(stream_id, 0)]
    assert client.read() is None  # then the sidecar closes the connection


def test_a_drain_goes_on_without_the_ping_ack_of_a_client_that_never_sends_it(
    drained_before_the_ping_ack: RawH2Client,
):
    # A client that does not ack the PING holds the drain up for a second (DRAIN_PING_WAIT),
    # not for the whole grace period: then the second GOAWAY, and the idle connection closes.
    # (Were the sidecar to wait for the ack, it would close the connection at the end of the
    # grace period with no second GOAWAY.)
    client = drained_before_the_ping_ack
    _, second = client.read_until(lambda _, goaways: bool(goaways))
    assert [(g.last_stream_id, g.error_code) for g in second] == [(0, 0)]
    assert client.read() is None
