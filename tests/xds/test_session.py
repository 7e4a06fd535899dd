"""The ADS session state machine, without sockets: when it answers and when it must not."""

from __future__ import annotations

import pytest

from tulle.xds.node import NodeIdError, make_node_id, parse_node_id
from tulle.xds.session import AdsSession, Request
from tulle.xds.types import CLUSTER, LISTENER, ROUTE


def ser(value: str) -> bytes:
    return value.encode()


def test_first_request_gets_a_response_even_when_nothing_matches():
    session = AdsSession("n")
    assert session.receive(Request(LISTENER, frozenset({"missing"})))
    response = session.due(LISTENER, {"a": "A"}, ser)
    assert response is not None
    assert response.resources == ()  # the client learns at once that "missing" does not exist


def test_ack_with_the_current_nonce_records_the_version_and_sends_nothing():
    session = AdsSession("n")
    session.receive(Request(ROUTE, frozenset({"r"})))
    sent = session.due(ROUTE, {"r": "R1"}, ser)
    assert sent is not None
    session.receive(Request(ROUTE, frozenset({"r"}), sent.version, sent.nonce))
    assert session.types[ROUTE].acked_version == sent.version
    assert session.due(ROUTE, {"r": "R1"}, ser) is None


def test_stale_nonce_acks_never_cause_a_resend_loop():
    """grpcio pipelines: it subscribes to more names before acking the previous response."""
    session = AdsSession("n")
    session.receive(Request(CLUSTER, frozenset({"a"})))
    first = session.due(CLUSTER, {"a": "A", "b": "B"}, ser)
    assert first is not None
    session.receive(Request(CLUSTER, frozenset({"a", "b"}), "", first.nonce))  # ack + subscribe
    second = session.due(CLUSTER, {"a": "A", "b": "B"}, ser)
    assert second is not None
    assert [name for name, _ in second.resources] == ["a", "b"]
    responses = 0
    for _ in range(1000):  # the same stale ack, again and again
        session.receive(Request(CLUSTER, frozenset({"a", "b"}), first.version, first.nonce))
        responses += session.due(CLUSTER, {"a": "A", "b": "B"}, ser) is not None
    assert responses == 0


def test_nack_keeps_the_last_good_version_and_is_not_answered_with_the_same_resources():
    session = AdsSession("n")
    session.receive(Request(ROUTE, frozenset({"r"})))
    good = session.due(ROUTE, {"r": "good"}, ser)
    assert good is not None
    session.receive(Request(ROUTE, frozenset({"r"}), good.version, good.nonce))
    bad = session.due(ROUTE, {"r": "bad"}, ser)
    assert bad is not None
    session.receive(Request(ROUTE, frozenset({"r"}), good.version, bad.nonce, "bad regex"))
    state = session.types[ROUTE]
    assert (state.acked_version, state.nack) == (good.version, "bad regex")
    assert session.due(ROUTE, {"r": "bad"}, ser) is None
    fixed = session.due(ROUTE, {"r": "fixed"}, ser)
    assert fixed is not None
    session.receive(Request(ROUTE, frozenset({"r"}), fixed.version, fixed.nonce))
    assert (state.acked_version, state.nack) == (fixed.version, None)


def test_new_version_is_sent_and_unchanged_content_is_not():
    session = AdsSession("n")
    session.receive(Request(LISTENER, frozenset()))  # wildcard
    first = session.due(LISTENER, {"a": "A"}, ser)
    assert first is not None
    assert session.due(LISTENER, {"a": "A"}, ser) is None
    second = session.due(LISTENER, {"a": "A", "b": "B"}, ser)
    assert second is not None
    assert [n for n, _ in second.resources] == ["a", "b"]
    assert second.version != first.version
    assert second.nonce != first.nonce


def test_node_ids():
    node = parse_node_id("sidecar~10.0.0.7~catalog-v1-0.shop~shop.svc.cluster.local")
    assert (node.mode, node.ip, node.pod, node.namespace) == (
        "sidecar",
        "10.0.0.7",
        "catalog-v1-0",
        "shop",
    )
    assert node.workload == "catalog-v1"
    assert parse_node_id(make_node_id("library", "1.2.3.4", "cart-1", "default")).mode == "library"
    with pytest.raises(NodeIdError, match="four"):
        parse_node_id("just-a-name")
    with pytest.raises(NodeIdError, match="mode 'gateway'"):
        parse_node_id("gateway~1.1.1.1~a.b~b.svc.cluster.local")
