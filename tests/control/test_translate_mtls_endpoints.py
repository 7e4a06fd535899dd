"""mTLS in the translated resources, compared with the shapes Istio generates: endpoints in
the mesh carry Istio's transport-socket match, and what the runner and the library register says
who terminates mTLS."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict

from tests.control.mtls_resources import (
    SIDECAR,
    WEB,
    endpoint,
    resources,
)
from tulle.api import validate_text
from tulle.client.registration import Registration
from tulle.control.registry import endpoint_from_dict
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.local.plan import plan_replica
from tulle.local.registrations import registrations
from tulle.xds import types


def test_an_endpoint_in_the_mesh_carries_istios_transport_socket_match():
    translated = resources(endpoints=(endpoint("10.0.0.1"), endpoint("10.0.0.2", labels=())))
    (group,) = MessageToDict(translated[types.ENDPOINT][f"outbound|8080||{WEB}"])["endpoints"]
    metadata = {
        e["endpoint"]["address"]["socketAddress"]["address"]: e.get("metadata", {})
        for e in group["lbEndpoints"]
    }
    assert metadata == {
        "10.0.0.1": {"filterMetadata": {"envoy.transport_socket_match": {"tlsMode": "istio"}}},
        "10.0.0.2": {},
    }


WORKLOADS = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
  mesh: sidecar
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: legacy}
spec:
  service: web
  command: [legacy]
  ports: [{name: http, port: 8080}]
  mesh: none
"""


def test_what_the_runner_and_the_library_register_says_who_terminates_mtls():
    result = validate_text(WORKLOADS)
    assert result.model is not None
    ports = iter(range(20000, 20100))
    bodies = [
        body
        for workload in result.model.workloads
        for body in registrations(
            plan_replica(workload, 0, ("127.0.0.1:15010", "http://127.0.0.1:15014"), ports.__next__)
        )
    ]
    library = Registration("http://cp", "web", "default", "127.0.0.1", 9999, "lib", 8080)
    bodies.append(library.body())
    endpoints = tuple(endpoint_from_dict(body) for body in bodies)
    translated = translate(build_snapshot(1, result.model, endpoints), SIDECAR)
    (group,) = MessageToDict(translated[types.ENDPOINT][f"outbound|8080||{WEB}"])["endpoints"]
    in_mesh = {
        e["endpoint"]["address"]["socketAddress"]["portValue"]: "envoy.transport_socket_match"
        in e.get("metadata", {}).get("filterMetadata", {})
        for e in group["lbEndpoints"]
    }
    # The sidecar's replica: its callers speak mTLS. Not the legacy workload, and not a
    # library app (it does not terminate TLS yet: docs/security.md), registered by the runner
    # or by itself.
    assert sorted(in_mesh.values()) == [False, False, True]
    assert in_mesh[9999] is False
