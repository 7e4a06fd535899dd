"""The trace store's relay to an OTLP/gRPC collector, against a real receiver (opentelemetry-
proto's TraceService on grpcio): exports reach it, a collector that is away costs only counts,
a full queue drops the oldest export, and nothing is queued when the Mesh names no collector."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry

from tests.control.otlp_receiver import otlp_receiver
from tests.control.otlp_spans import export, hex_trace, span
from tulle.control.traces.forward import OtlpForwarder, grpc_target

pytestmark = pytest.mark.timeout(60)


def count(registry: CollectorRegistry, result: str) -> float:
    value = registry.get_sample_value("tulle_trace_forwarded_spans_total", {"result": result})
    return value or 0.0


async def until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait for ``condition`` (a state to reach), letting the loop run."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


def test_exports_reach_a_real_otlp_receiver() -> None:
    registry = CollectorRegistry()

    async def main(url: str) -> None:
        forwarder = OtlpForwarder(lambda: url, registry)
        forwarder.start()
        try:
            forwarder.offer(export(("frontend", [span(1, 1), span(1, 2, parent=1)])), 2)
            forwarder.offer(export(("payment", [span(1, 3, parent=2)])), 1)
            await until(lambda: count(registry, "sent") == 3)
        finally:
            await forwarder.stop()

    with otlp_receiver() as receiver:
        asyncio.run(main(receiver.url))
        assert sorted(receiver.spans()) == [
            ("frontend", hex_trace(1), "0000000000000001"),
            ("frontend", hex_trace(1), "0000000000000002"),
            ("payment", hex_trace(1), "0000000000000003"),
        ]


def test_a_collector_away_costs_counts_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as unused:  # a port nothing listens on
        unused.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{unused.getsockname()[1]}"
    registry = CollectorRegistry()

    async def main() -> None:
        forwarder = OtlpForwarder(lambda: url, registry, timeout=2.0)
        forwarder.start()
        try:
            for trace in (1, 2):
                forwarder.offer(export(("a", [span(trace, 1)])), 1)
            await until(lambda: count(registry, "failed") == 2)
        finally:
            await forwarder.stop()

    with caplog.at_level(logging.WARNING, "tulle.control.traces.forward"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert warnings[0].startswith(f"OTLP collector {url} refused 1 spans: UNAVAILABLE")


def test_a_full_queue_drops_the_oldest_and_no_collector_queues_nothing() -> None:
    registry = CollectorRegistry()
    collector: list[str | None] = [None]

    async def main(url: str) -> None:
        forwarder = OtlpForwarder(lambda: collector[0], registry, queue_size=2)
        forwarder.offer(export(("a", [span(9, 1)])), 1)  # no collector: not queued
        collector[0] = url
        for trace in (1, 2, 3):  # before the task runs: the queue holds two
            forwarder.offer(export(("a", [span(trace, 1), span(trace, 2)])), 2)
        forwarder.start()
        try:
            await until(lambda: count(registry, "sent") == 4)
        finally:
            await forwarder.stop()

    with otlp_receiver() as receiver:
        asyncio.run(main(receiver.url))
        assert {trace for _, trace, _ in receiver.spans()} == {hex_trace(2), hex_trace(3)}
    assert count(registry, "dropped") == 2


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("http://collector:4317", ("collector:4317", False)),
        ("https://otel.example.com", ("otel.example.com:4317", True)),
        ("http://[::1]:9000", ("[::1]:9000", False)),
    ],
)
def test_grpc_targets(endpoint: str, target: tuple[str, bool]) -> None:
    assert grpc_target(endpoint) == target
