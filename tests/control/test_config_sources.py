"""Config sources: files and applied resources validated together; a bad change changes nothing;
applied config persists in SQLite."""

from __future__ import annotations

import pytest

from tulle.control.config import ConfigSources
from tulle.control.store import StateStore

WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
"""

ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - route:
        - destination: {host: web}
      timeout: %s
"""

SUBSET_ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - route:
        - destination: {host: web, subset: v1}
"""

RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets: [{name: v1, labels: {app: web}}]
"""


@pytest.fixture
def sources(tmp_path):
    config = tmp_path / "config"
    config.mkdir()
    (config / "web.yaml").write_text(WORKLOAD)
    store = StateStore(tmp_path / "state")
    result = ConfigSources([config], store)
    result.load()
    yield result
    store.close()


def timeout_of(sources: ConfigSources) -> float | None:
    assert sources.validation is not None
    assert sources.validation.model is not None
    routes = sources.validation.model.http_routes.get("web.default.svc.cluster.local", ())
    return routes[0].timeout if routes else None


def test_apply_then_update_then_unchanged(sources):
    created = sources.apply(ROUTE % "1s", "r.yaml")
    assert created.accepted
    assert created.created == (("VirtualService", "default", "web"),)
    assert timeout_of(sources) == 1.0
    updated = sources.apply(ROUTE % "2s", "r.yaml")
    assert updated.updated == (("VirtualService", "default", "web"),)
    assert timeout_of(sources) == 2.0
    assert sources.apply(ROUTE % "2s", "r.yaml").unchanged == (
        ("VirtualService", "default", "web"),
    )


def test_an_invalid_apply_changes_nothing_and_says_why(sources):
    sources.apply(ROUTE % "1s", "r.yaml")
    refused = sources.apply(ROUTE % "soon", "bad.yaml")
    assert not refused.accepted
    assert [f.format() for f in refused.findings] == [
        "bad.yaml:9: ERROR VirtualService default/web: spec.http[0].timeout: invalid duration "
        "'soon': write a number and a unit (h, m, s, ms, us, ns), e.g. '1.5s', '100ms', '1m'"
    ]
    assert timeout_of(sources) == 1.0
    assert (
        sources.store.resources()[("VirtualService", "default", "web")]["spec"]["http"][0][
            "timeout"
        ]
        == "1s"
    )


def test_a_change_that_breaks_another_resource_is_refused(sources):
    assert sources.apply(RULE, "rule.yaml").accepted
    assert sources.apply(SUBSET_ROUTE, "route.yaml").accepted
    refused = sources.delete(("DestinationRule", "default", "web"))
    assert not refused.accepted
    assert (
        "subset 'v1' of web.default.svc.cluster.local is not defined" in refused.findings[0].message
    )
    assert ("DestinationRule", "default", "web") in sources.store.resources()


def test_deleting_what_a_file_defines_is_refused_with_a_hint(sources):
    refused = sources.delete(("Workload", "default", "web"))
    assert not refused.accepted
    assert "edit the file instead" in refused.findings[0].message


def test_file_edits_take_effect_and_bad_edits_keep_the_last_good_config(sources, tmp_path):
    path = tmp_path / "config" / "route.yaml"
    path.write_text(ROUTE % "3s")
    assert sources.poll_files()
    assert timeout_of(sources) == 3.0
    path.write_text(ROUTE % "3 seconds")
    assert not sources.poll_files()
    assert timeout_of(sources) == 3.0
    assert any("invalid duration '3 seconds'" in f.message for f in sources.file_findings)
    path.write_text(ROUTE % "4s")
    assert sources.poll_files()
    assert timeout_of(sources) == 4.0
    assert not sources.poll_files()  # nothing changed since


def test_applied_config_survives_a_restart(tmp_path, sources):
    sources.apply(ROUTE % "5s", "r.yaml")
    sources.store.close()
    store = StateStore(tmp_path / "state")
    again = ConfigSources([tmp_path / "config"], store)
    again.load()
    assert timeout_of(again) == 5.0
    assert again.source_of(("VirtualService", "default", "web")) == "applied"
    assert again.source_of(("Workload", "default", "web")).endswith("web.yaml")
    store.close()
