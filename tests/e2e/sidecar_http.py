"""What the sidecar's HTTP tests (tests/e2e/test_sidecar_http_*.py) share: the service the app
calls (``WEB``), its VirtualService and DestinationRule applied to the control plane, and which
backend answered."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import (
    ControlPlane,
)
from tests.manifests import destination_rule, virtual_service

WEB = "http://web:8080"


def routes(plane: ControlPlane, http: str) -> None:
    plane.apply(virtual_service(http))


def rule(plane: ControlPlane, traffic_policy: str, subsets: str = "") -> None:
    plane.apply(destination_rule(traffic_policy, subsets))


def backend_of(response: httpx.Response) -> str:
    return response.headers.get("x-backend", "-")
