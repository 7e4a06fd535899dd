"""A library app's own registration carries ``TULLE_LOCALITY`` (its endpoint's locality)."""

from __future__ import annotations

import pytest

from tulle.client.registration import Registration
from tulle.xds.node import parse_node_id

NODE = parse_node_id("library~10.0.0.7~echo-0.default~default.svc.cluster.local")


def test_tulle_locality_is_the_endpoints_locality(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TULLE_LOCALITY", "region1/zone2")
    registration = Registration.load(NODE, "http://cp", service="echo", port=8080)
    assert registration is not None
    assert registration.body()["locality"] == "region1/zone2"
    monkeypatch.delenv("TULLE_LOCALITY")
    plain = Registration.load(NODE, "http://cp", service="echo", port=8080)
    assert plain is not None
    assert "locality" not in plain.body()
