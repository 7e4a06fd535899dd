"""What the outbound engine tests (tests/engine/test_outbound_*.py) share: the route table they
dispatch on, the config they apply (VirtualService, DestinationRule, subsets v1 and v2), and
requests sent many at a time with who served them counted."""

from __future__ import annotations

import collections

from tests.engine.conftest import (
    handle,
    request,
    workload,
)
from tests.manifests import destination_rule, virtual_service
from tulle.engine.message import Response

TABLE = "http_proxy"
TWO = workload("v1") + workload("v2")


def vs(http: str) -> str:
    return virtual_service(http)


def rule(traffic_policy: str) -> str:
    """A DestinationRule for web with ``traffic_policy`` (YAML flow style)."""
    return destination_rule(traffic_policy)


SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {version: v1}}, {name: v2, labels: {version: v2}}]
---
"""


async def many(engine, count: int, **kwargs) -> list[Response]:
    return [await handle(engine, TABLE, request(**kwargs)) for _ in range(count)]


def served(responses: list[Response]) -> collections.Counter[str]:
    return collections.Counter(r.upstream for r in responses if r.status == 200)
