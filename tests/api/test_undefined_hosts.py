"""A host that no file defines: a WARNING (it must exist elsewhere, e.g. as a Kubernetes
Service) when the files do not define the mesh's workloads; an ERROR when they hold a Workload
(local mode), with ``strict_hosts`` (``tulle validate --strict-hosts``), and in the control
plane, whose registry is the whole mesh's. ``hosts_defined_in`` reads the hosts of other files
(``tulle validate --hosts-from``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api import Severity, hosts_defined_in, validate_text
from tulle.control.config import ConfigSources
from tulle.control.store import StateStore

# Every check that names a host: a VirtualService destination and mirror, an HTTPRoute parent
# and backend, a RateLimit target, a Fallback host and target.
REFERENCES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ghost}
spec:
  hosts: [ghost]
  http:
    - route:
        - destination: {host: ghost}
      mirror: {host: shadow.default}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: phantom}
spec:
  parentRefs: [{group: "", kind: Service, name: phantom}]
  rules:
    - backendRefs: [{name: spirit, port: 80}]
---
apiVersion: tulle.dev/v1alpha1
kind: RateLimit
metadata: {name: to-ghost}
spec:
  target: {host: ghost}
  limit: {requests: 10}
---
apiVersion: tulle.dev/v1alpha1
kind: Fallback
metadata: {name: ghost}
spec:
  host: ghost
  to: {host: wraith}
"""

UNDEFINED = [
    (8, "spec.http[0].route[0].destination.host", "host ghost (ghost.default.svc.cluster.local)"),
    (9, "spec.http[0].mirror.host", "host shadow.default (shadow.default.svc.cluster.local)"),
    (15, "spec.parentRefs[0].name", "Service phantom (phantom.default.svc.cluster.local)"),
    (17, "spec.rules[0].backendRefs[0].name", "Service spirit (spirit.default.svc.cluster.local)"),
    (23, "spec.target.host", "host ghost (ghost.default.svc.cluster.local)"),
    (30, "spec.host", "host ghost (ghost.default.svc.cluster.local)"),
    (31, "spec.to.host", "host wraith (wraith.default.svc.cluster.local)"),
]
NOT_DEFINED = "is not defined by any Workload, Service or ServiceEntry"
ELSEWHERE = (
    f"{NOT_DEFINED} of these files: it must exist elsewhere (a Kubernetes Service, a "
    "ServiceEntry) for this config to apply"
)

WORKLOAD = """\
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: other}
spec:
  command: [other]
  ports: [{name: http, port: 9080}]
"""

ALL_HOSTS = [
    f"{name}.default.svc.cluster.local"
    for name in ("ghost", "phantom", "spirit", "wraith", "shadow")
]


def lines(text: str, **options: object) -> list[tuple[int, Severity, str, str]]:
    result = validate_text(text, "f.yaml", **options)  # type: ignore[arg-type]
    return [(f.line, f.severity, f.field, f.message) for f in result.findings]


def test_without_workloads_an_undefined_host_is_a_warning_that_says_where_it_must_be():
    result = validate_text(REFERENCES, "f.yaml")
    assert [(f.line, f.severity, f.field, f.message) for f in result.findings] == [
        (line, Severity.WARNING, field, f"{what} {ELSEWHERE}") for line, field, what in UNDEFINED
    ]
    assert result.ok
    assert result.model is not None


def test_with_a_workload_the_files_are_the_mesh_and_an_undefined_host_is_an_error():
    result = validate_text(REFERENCES + WORKLOAD, "f.yaml")
    assert [(f.line, f.severity, f.field, f.message) for f in result.findings] == [
        (line, Severity.ERROR, field, f"{what} {NOT_DEFINED}") for line, field, what in UNDEFINED
    ]
    assert result.model is None


def test_strict_hosts_makes_it_an_error_without_workloads():
    assert lines(REFERENCES, strict_hosts=True) == [
        (line, Severity.ERROR, field, f"{what} {NOT_DEFINED}") for line, field, what in UNDEFINED
    ]


@pytest.mark.parametrize("strict", [False, True])
def test_known_hosts_are_defined(strict: bool):
    assert lines(REFERENCES, known_hosts=ALL_HOSTS, strict_hosts=strict) == []


SUBSET_ROUTE = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
"""
RULE = """\
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  subsets: [{name: v2, labels: {version: v2}}]
"""
REVIEWS = ["reviews.default.svc.cluster.local"]


def test_a_subset_with_no_destination_rule_in_the_files_is_a_warning_unless_strict():
    field = "spec.http[0].route[0].destination.subset"
    missing = "subset 'v1' of reviews.default.svc.cluster.local is not defined"
    assert lines(SUBSET_ROUTE, known_hosts=REVIEWS) == [
        (
            8,
            Severity.WARNING,
            field,
            f"{missing} (no DestinationRule for it in these files: one must exist elsewhere "
            "for this config to apply)",
        )
    ]
    assert lines(SUBSET_ROUTE, known_hosts=REVIEWS, strict_hosts=True) == [
        (8, Severity.ERROR, field, f"{missing} (no DestinationRule for it)")
    ]
    # A DestinationRule of the host is in the files and lacks the subset: wrong whatever else
    # exists (one DestinationRule per host).
    assert lines(SUBSET_ROUTE + RULE, known_hosts=REVIEWS) == [
        (8, Severity.ERROR, field, f"{missing} (defined: v2)")
    ]


HOSTS_FILES = {
    "services.yaml": """\
apiVersion: v1
kind: Service
metadata: {name: ghost}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ghost}
spec: {}
""",
    "nested/entries.yaml": """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: external}
spec:
  hosts: [shadow.default.svc.cluster.local]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: broken}
spec:
  hosts: [nowhere]
  http: [{timeout: soon}]
""",
    "workloads.yml": """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: phantom}
spec:
  command: [phantom]
  ports: [{name: http, port: 80}]
""",
}


def test_hosts_defined_in_reads_services_entries_and_workloads_only(tmp_path: Path):
    for name, text in HOSTS_FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    hosts, findings = hosts_defined_in([tmp_path])
    assert hosts == {
        "ghost.default.svc.cluster.local",
        "shadow.default.svc.cluster.local",
        "phantom.default.svc.cluster.local",
    }
    assert findings == []  # the broken VirtualService there is not this run's concern
    # Read for hosts only: its Workload does not make the files validated local mode.
    assert [
        (f.line, f.severity) for f in validate_text(REFERENCES, known_hosts=hosts).findings
    ] == [(17, Severity.WARNING), (31, Severity.WARNING)]  # spirit and wraith
    missing, read = hosts_defined_in([tmp_path / "absent.yaml"])
    assert missing == set()
    assert [(f.severity, f.message) for f in read] == [
        (Severity.ERROR, "no such file or directory")
    ]


def test_the_control_plane_holds_undefined_hosts_as_errors(tmp_path: Path):
    """Its known hosts are its registry's (the whole mesh): with no Workload in its files, an
    applied route to a host nothing defines is refused, as ``tulle validate --strict-hosts``
    says; once the registry knows the host, it is taken."""
    store = StateStore(tmp_path / "state")
    try:
        known: set[str] = set()
        sources = ConfigSources([], store, known_hosts=lambda: known)
        sources.load()
        route = REFERENCES.split("---", maxsplit=1)[0]
        refused = sources.apply(route, "route.yaml")
        assert not refused.accepted
        assert [(f.severity, f.message) for f in refused.findings] == [
            (Severity.ERROR, f"host ghost (ghost.default.svc.cluster.local) {NOT_DEFINED}"),
            (
                Severity.ERROR,
                f"host shadow.default (shadow.default.svc.cluster.local) {NOT_DEFINED}",
            ),
        ]
        known.update(ALL_HOSTS)
        assert sources.apply(route, "route.yaml").accepted
    finally:
        store.close()
