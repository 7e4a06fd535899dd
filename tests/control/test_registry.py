"""Registrations: validated with a message naming the field; persisted."""

from __future__ import annotations

import json

import pytest

from tulle.control.registry import LocalRegistry, RegistrationError, endpoint_from_dict
from tulle.control.store import StateStore


def test_a_registration_resolves_the_host_and_fills_defaults():
    endpoint = endpoint_from_dict(
        {"service": "cart", "namespace": "shop", "address": "127.0.0.1", "port": 9000}
    )
    assert endpoint.service == "cart.shop.svc.cluster.local"
    assert (endpoint.protocol, endpoint.service_account, endpoint.healthy) == (
        "HTTP",
        "default",
        True,
    )
    assert endpoint.id == "cart.shop.svc.cluster.local|127.0.0.1:9000"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"address": "127.0.0.1", "port": 1}, "service: required field is missing"),
        ({"service": "a", "address": "localhost", "port": 1}, "address: 'localhost' is not an IP"),
        ({"service": "a", "address": "127.0.0.1", "port": "80"}, "port: must be an integer"),
        ({"service": "a", "address": "127.0.0.1", "port": 70000}, "port: 70000 is not a port"),
        ({"service": "a", "address": "127.0.0.1", "port": 1, "protocol": "UDP"}, "protocol: 'UDP'"),
        (
            {"service": "a", "address": "127.0.0.1", "port": 1, "colour": "red"},
            "colour: unknown field",
        ),
        (
            {"service": "A_B", "address": "127.0.0.1", "port": 1},
            "service: 'A_B' is not a valid host",
        ),
        ({"service": "a", "address": "127.0.0.1", "port": True}, "port: must be an integer"),
    ],
)
def test_bad_registrations_name_the_field(data, message):
    with pytest.raises(RegistrationError, match=message):
        endpoint_from_dict(data)


def test_registrations_persist(tmp_path):
    store = StateStore(tmp_path)
    registry = LocalRegistry(store.endpoints(), store.save_endpoint, store.delete_endpoint)
    first = endpoint_from_dict(
        {"service": "a", "address": "127.0.0.1", "port": 1, "labels": {"v": "1"}}
    )
    second = endpoint_from_dict({"service": "a", "address": "127.0.0.1", "port": 2})
    assert registry.register(first)
    assert registry.register(second)
    assert not registry.register(first)  # unchanged
    assert registry.deregister(second.id)
    assert not registry.deregister(second.id)
    store.close()
    reopened = StateStore(tmp_path)
    assert reopened.endpoints() == (first,)
    reopened.close()


def test_a_stored_endpoint_the_checks_now_refuse_is_left_out_not_fatal(tmp_path, caplog):
    store = StateStore(tmp_path)
    good = endpoint_from_dict({"service": "a", "address": "127.0.0.1", "port": 1})
    store.save_endpoint(good)
    old = {**good.to_dict(), "address": "0.0.0.0", "id": "a.default.svc.cluster.local|0.0.0.0:1"}
    store._db.execute("INSERT INTO endpoints VALUES (?, ?)", (old["id"], json.dumps(old)))
    store.close()
    reopened = StateStore(tmp_path)
    assert reopened.endpoints() == (good,)
    reopened.close()
    assert "stored endpoint a.default.svc.cluster.local|0.0.0.0:1 left out: address:" in caplog.text
