"""``tulle apply`` and ``-f`` files that mix kinds, through the control plane's config sources:
the Services are stored and define hosts; Deployments, ServiceAccounts and Secrets are skipped
(INFO, the change is accepted) and nothing of them is stored or shown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tulle.control.config import ConfigSources
from tulle.control.store import StateStore

SECRET_VALUE = "s3cr3t-Value-2718"

MIXED = f"""\
apiVersion: v1
kind: Secret
metadata: {{name: ratings-db}}
stringData: {{password: {SECRET_VALUE}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: ratings-v1}}
spec: {{selector: {{matchLabels: {{app: ratings}}}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: ratings}}
spec:
  ports: [{{name: http, port: 9080}}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
"""


@pytest.fixture
def sources(tmp_path: Path) -> Iterator[ConfigSources]:
    store = StateStore(tmp_path / "state")
    result = ConfigSources([], store)
    result.load()
    yield result
    store.close()


def test_apply_stores_the_services_and_skips_the_rest(sources: ConfigSources):
    refused = sources.apply(ROUTE, "route.yaml")
    assert not refused.accepted  # ratings is no host yet
    applied = sources.apply(MIXED, "mixed.yaml")
    assert applied.accepted
    assert applied.created == (("Service", "default", "ratings"),)
    assert [(f.severity.value, f.kind) for f in applied.findings] == [
        ("INFO", "Secret"),
        ("INFO", "Deployment"),
    ]
    assert list(sources.store.resources()) == [("Service", "default", "ratings")]
    assert SECRET_VALUE not in repr(sources.store.resources())
    assert sources.apply(ROUTE, "route.yaml").accepted
    assert sources.validation is not None
    assert sources.validation.model is not None
    assert "ratings.default.svc.cluster.local" in sources.validation.model.http_routes
