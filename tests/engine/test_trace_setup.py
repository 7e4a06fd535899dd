"""A workload's tracing as its config changes (tulle.engine.trace_setup): spans go to the
control plane's store (its HTTP API + /v1/traces) with the replica's token when the Mesh names
no collector, to the collector without any token when it names one; the tracer is kept across
sampling changes, dropped when tracing goes; the counts survive a change of exporter. Against a
real OTLP/HTTP receiver standing in for both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.e2e.conftest import wait_until
from tests.obs.test_trace_export import record
from tests.otlp_receiver import Receiver, otlp_receiver
from tulle.engine.trace_setup import WorkloadTracing, control_plane_api, node_resource
from tulle.engine.tracing_config import TracingSettings
from tulle.xds.node import parse_node_id


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as state:
        yield state


def test_spans_go_to_the_store_with_the_token_or_to_the_collector_without(
    receiver: Receiver,
) -> None:
    receiver.clear()
    node = parse_node_id("sidecar~10.0.0.5~frontend-0.shop~shop.svc.cluster.local")
    registry = CollectorRegistry()
    plane = f"http://127.0.0.1:{receiver.port}"
    tracing = WorkloadTracing(plane, node_resource(node), lambda: "replica-token", registry, 0.05)
    try:
        tracer = tracing.update(TracingSettings(1.0, "", "frontend-v2"))
        assert tracer is not None
        assert tracer.fraction == 0.01
        tracing.record(record(1))
        wait_until(lambda: len(receiver.headers) == 1, timeout=30)
        assert receiver.headers[0]["authorization"] == "Bearer replica-token"
        resource = {kv.key: kv.value.string_value
                    for kv in receiver.requests[0].resource_spans[0].resource.attributes}  # fmt: skip
        assert resource["service.name"] == "frontend-v2"  # the control plane's name for it
        assert resource["service.namespace"] == "shop"
        assert resource["service.instance.id"] == "frontend-0.shop"
        assert tracing.update(TracingSettings(100.0, "", "frontend-v2")) is tracer
        assert tracer.fraction == 1.0
        collector = f"http://localhost:{receiver.port}/v1/traces"  # not the control plane
        assert tracing.update(TracingSettings(100.0, collector, "frontend-v2")) is tracer
        tracing.record(record(2))
        wait_until(lambda: len(receiver.headers) == 2, timeout=30)
        assert "authorization" not in receiver.headers[1]  # no mesh credential leaves
        # Both exporters counted (an export counts once its answer is read, after the receiver
        # has the request: wait for it).
        wait_until(
            lambda: "tulle_trace_spans_exported_total 2.0" in generate_latest(registry).decode(),
            timeout=30,
        )
        assert tracing.update(None) is None
        assert tracing.exporter is None
    finally:
        tracing.stop()


def test_a_sidecar_finds_the_control_plane_s_api_beside_its_xds() -> None:
    assert control_plane_api("tulle-controlplane.tulle-system.svc:15012") == (
        "http://tulle-controlplane.tulle-system.svc:15014"
    )
    assert control_plane_api("[fd00::1]:15012") == "http://[fd00::1]:15014"
