"""A hybrid mesh: a library-mode app (``examples/library/app.py``: tulle.client out, the ASGI
middleware in) and a sidecar-mode app (an unmodified app behind ``tulle proxy``) call each other
through one control plane, and both ends of each call report it with the same labels."""

from __future__ import annotations

import json

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import free_port, synced, wait_until

CONFIG = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: lib}
spec:
  command: [lib]
  ports: [{name: http, port: 8080}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: side}
spec:
  command: [side]
  ports: [{name: http, port: 8080}]
"""

LIB = "lib.default.svc.cluster.local"
SIDE = "side.default.svc.cluster.local"


def requests_by_labels(exposition: str) -> dict[frozenset[tuple[str, str]], float]:
    """``tulle_requests_total`` per label set."""
    result = {}
    for family in text_string_to_metric_families(exposition):
        if family.name == "tulle_requests":
            for sample in family.samples:
                if sample.name == "tulle_requests_total":
                    result[frozenset(sample.labels.items())] = sample.value
    return result


def call(source: str, service: str, workload: str, reporter: str) -> frozenset[tuple[str, str]]:
    """A plain-text call's labels (these processes have no certificates): no principals; the
    callee says ``none`` for the connection's security, the caller ``unknown`` (as Istio)."""
    return frozenset(
        {
            "reporter": reporter, "source_workload": source, "destination_service": service,
            "destination_workload": workload, "response_code": "200", "response_flags": "-",
            "source_principal": "unknown", "destination_principal": "unknown",
            "connection_security_policy": "none" if reporter == "destination" else "unknown",
        }.items()
    )  # fmt: skip


def test_library_and_sidecar_apps_call_each_other_with_the_same_metrics(
    control_plane, processes, tmp_path
):
    control_plane.apply(CONFIG)
    # The sidecar-mode app: unmodified, calling out through HTTP_PROXY; its sidecar's inbound
    # listener is the endpoint the mesh knows.
    app_port, inbound = free_port(), free_port()
    sidecar = processes.sidecar(
        control_plane, "side-0", None, "--inbound-port", str(inbound), "--app-port", str(app_port)
    )
    processes.http_backend("side", port=app_port, env={"HTTP_PROXY": sidecar.proxy_url})
    control_plane.register(service="side", address="127.0.0.1", port=inbound, servicePort=8080,
                           workload="side")  # fmt: skip
    # The library-mode app registers itself.
    library = processes.library_app(control_plane, "lib-0", "lib", tmp_path / "lib.log")
    wait_until(lambda: synced(control_plane, sidecar.node) and synced(control_plane, library.node))

    to_side = library.get("/call", params={"url": "http://side:8080/hello"}).json()
    assert to_side["status"] == 200
    assert to_side["body"]["name"] == "side"
    assert to_side["body"]["headers"]["x-tulle-source-workload"] == "lib"

    # Through the sidecar's inbound listener, to the app, which calls the library app.
    reply = httpx.get(f"http://127.0.0.1:{inbound}/call?url=http://lib:8080/hello", timeout=10)
    assert reply.status_code == 200, reply.text
    to_library = reply.json()
    assert to_library["status"] == 200
    assert json.loads(to_library["body"]) == {"workload": "lib", "path": "/hello", "caller": "side"}

    at_library = requests_by_labels(library.metrics())
    at_sidecar = requests_by_labels(sidecar.admin("/stats/prometheus").text)
    # lib -> side: the library reports it as the source, the sidecar as the destination.
    assert at_library[call("lib", SIDE, "side", "source")] == 1
    assert at_sidecar[call("lib", SIDE, "side", "destination")] == 1
    # side -> lib: the sidecar reports it as the source, the library as the destination.
    assert at_sidecar[call("side", LIB, "lib", "source")] == 1
    assert at_library[call("side", LIB, "lib", "destination")] == 1
