"""Istio and Gateway API semantics from outside (issue 19), with a real control plane, real HTTP
backends and two ``tulle proxy`` sidecars, one in namespace ``default`` and one in ``team``:

- RequestRedirect's 303, 307 and 308 are the codes the sidecar answers with, and a rule without
  backendRefs answers 500;
- VirtualService weights 1 and 3 (not adding up to 100) split traffic 1 to 3 (Istio sends
  ``weight / sum of weights``);
- a GAMMA consumer route (an HTTPRoute in ``team`` for the Service ``api`` of ``default``)
  changes where ``team``'s calls go, and only theirs: ``default``'s calls follow the producer
  route.

One control plane and one pair of sidecars for the module (the suite is near its time limit)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.e2e.conftest import (
    ControlPlane,
    Processes,
    Sidecar,
    _stop,
    start_control_plane,
    synced,
    wait_until,
)

CONFIG = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web]
  http:
    - route:
        - destination: {host: web, subset: v1}
          weight: 1
        - destination: {host: web, subset: v2}
          weight: 3
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api}
spec:
  parentRefs: [{group: "", kind: Service, name: api, port: 8080}]
  rules:
    - matches: [{path: {type: Exact, value: /see-other}}]
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /done}, statusCode: 303}
    - matches: [{path: {type: Exact, value: /temporary}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: web, statusCode: 307}}]
    - matches: [{path: {type: Exact, value: /permanent}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, statusCode: 308}}]
    - matches: [{path: {type: Exact, value: /nowhere}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-seen, value: "1"}]}
    - backendRefs: [{name: api, port: 8080}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api-for-team, namespace: team}
spec:
  parentRefs: [{group: "", kind: Service, name: api, namespace: default, port: 8080}]
  rules:
    - backendRefs: [{name: web, namespace: default, port: 8080}]
"""


@dataclass
class Mesh:
    plane: ControlPlane
    default: Sidecar
    team: Sidecar


def _sidecar(processes: Processes, plane: ControlPlane, pod: str, namespace: str) -> Sidecar:
    """``tulle proxy`` for pod ``pod`` of ``namespace`` (conftest's sidecars are in default)."""
    node = f"sidecar~127.0.0.1~{pod}.{namespace}~{namespace}.svc.cluster.local"
    sidecar = processes.sidecar(plane, pod, None, "--node-id", node)
    sidecar.node = node
    return sidecar


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("semantics")
    (tmp / "config").mkdir()
    plane = start_control_plane(tmp / "state", tmp / "config")
    processes = Processes()
    try:
        for name, service, version in (("a", "web", "v1"), ("b", "web", "v2"), ("c", "api", "")):
            port = processes.http_backend(name)
            plane.register(
                service=service, address="127.0.0.1", port=port, servicePort=8080,
                labels={"version": version} if version else {},
            )  # fmt: skip
        plane.apply(CONFIG)
        mesh = Mesh(
            plane,
            _sidecar(processes, plane, "client-0", "default"),
            _sidecar(processes, plane, "client-1", "team"),
        )
        for sidecar in (mesh.default, mesh.team):
            wait_until(lambda s=sidecar: synced(plane, s.node), timeout=30)
        yield mesh
    finally:
        processes.stop_all()
        _stop(plane.proc)


def _get(sidecar: Sidecar, url: str) -> httpx.Response:
    with sidecar.client(follow_redirects=False) as client:
        return client.get(url)


@pytest.mark.parametrize(
    ("path", "code", "location"),
    [
        ("/see-other?q=1", 303, "http://api:8080/done?q=1"),
        ("/temporary", 307, "http://web:8080/temporary"),
        ("/permanent", 308, "https://api/permanent"),
    ],
)
def test_request_redirect_codes_are_the_ones_given(
    mesh: Mesh, path: str, code: int, location: str
) -> None:
    response = _get(mesh.default, f"http://api:8080{path}")
    assert response.status_code == code, response.headers
    assert response.headers["location"] == location


def test_a_rule_without_backends_answers_500(mesh: Mesh) -> None:
    """No backendRefs and no filter that answers: "the rule performs no forwarding", 500."""
    response = _get(mesh.default, "http://api:8080/nowhere")
    assert response.status_code == 500
    assert "x-backend" not in response.headers
    assert _get(mesh.default, "http://api:8080/elsewhere").headers["x-backend"] == "c"


def test_weights_not_adding_up_to_100_split_in_proportion(mesh: Mesh) -> None:
    """Weights 1 and 3: v2 (backend b) takes 3/4 of the calls. 400 calls: the count of b is
    binomial (n 400, p 0.75), mean 300, standard deviation 8.7; the bounds are 4.6 of them
    away, and exclude an even split (200) and all on one (400)."""
    counts: Counter[str] = Counter()
    with mesh.default.client() as client:
        for _ in range(400):
            response = client.get("http://web:8080/")
            assert response.status_code == 200
            counts[response.headers["x-backend"]] += 1
    assert set(counts) == {"a", "b"}
    assert 260 <= counts["b"] <= 340, counts


def test_a_consumer_route_changes_its_namespace_calls_only(mesh: Mesh) -> None:
    """team's route for default's api sends team's calls to web (a or b); default's calls
    follow api's own (producer) route to its backend c, redirects included."""
    team = Counter(
        _get(mesh.team, "http://api.default:8080/").headers.get("x-backend", "-") for _ in range(20)
    )
    assert set(team) <= {"a", "b"}, team
    assert sum(team.values()) == 20
    assert _get(mesh.team, "http://api.default:8080/see-other").status_code == 200
    default = Counter(
        _get(mesh.default, "http://api.default:8080/").headers.get("x-backend", "-")
        for _ in range(20)
    )
    assert default == {"c": 20}
