"""gRPC through the sidecar: a stock grpcio client speaks HTTP/2 (prior knowledge) to the proxy,
which detects it, routes by the authority, and calls real gRPC servers over HTTP/2."""

from __future__ import annotations

import collections

import grpc
import pytest

from tests.e2e.conftest import ControlPlane, Processes, synced, wait_until

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
    plane.apply(
        f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
{http}
"""
    )


def test_unary_calls_are_balanced_over_http2(control_plane, processes, sidecar):
    register_greeters(control_plane, processes, a=0.0, b=0.0)
    proxy = sidecar()
    results = collections.Counter(call_many(proxy.http_proxy_port, 40))
    assert set(results) == {"a", "b"}
    assert min(results.values()) >= 10


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
