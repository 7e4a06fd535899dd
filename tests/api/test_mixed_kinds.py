"""Files that mix kinds, as real ones do (Istio's bookinfo.yaml: Services, ServiceAccounts and
Deployments beside mesh config): Kubernetes kinds that are not mesh config are skipped with one
INFO finding each, a Kubernetes Service is a host with its ports, and under ``tulle up`` a
Service must agree with the Workloads of its host."""

from __future__ import annotations

from pathlib import Path

import pytest

from tulle.api import kubernetes as api_kubernetes
from tulle.api import validate_paths, validate_text
from tulle.api.findings import Severity
from tulle.api.model import ResourceRef, ServicePort
from tulle.kube import mapping, registry

SECRET_VALUE = "s3cr3t-Value-4711"

MIXED = f"""\
apiVersion: v1
kind: Namespace
metadata: {{name: shop}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: web, namespace: shop}}
---
apiVersion: v1
kind: Secret
metadata: {{name: web-credentials, namespace: shop}}
type: Opaque
stringData: {{password: {SECRET_VALUE}}}
data: {{token: czNjcjN0LVZhbHVlLTQ3MTE=}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: web-settings, namespace: shop}}
data: {{colour: blue}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec: {{containers: [{{name: web, image: web:1}}]}}
---
apiVersion: batch/v1
kind: CronJob
metadata: {{name: nightly, namespace: shop}}
spec: {{schedule: "0 3 * * *", jobTemplate: {{spec: {{}}}}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: web-reader, namespace: shop}}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: deny-all, namespace: shop}}
spec: {{podSelector: {{}}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{app: web}}
  ports:
    - {{name: http-web, port: 8080, targetPort: 8080}}
    - {{name: admin, port: 9000, appProtocol: grpc}}
    - {{name: metrics, port: 9090, appProtocol: http}}
    - {{name: tcp-db, port: 5432, appProtocol: tcp}}
    - {{name: raw, port: 7000}}
    - {{name: http-plain, port: 8081, appProtocol: kubernetes.io/h2c}}
    - {{name: dns, port: 53, protocol: UDP}}
"""

WEB = "web.shop.svc.cluster.local"


def test_kubernetes_kinds_that_are_not_mesh_config_are_skipped_with_one_info_each():
    result = validate_text(MIXED, "mixed.yaml")
    assert [f.format() for f in result.findings] == [
        "mixed.yaml:1: INFO Namespace default/shop: -: v1 Namespace is not mesh config: skipped",
        "mixed.yaml:5: INFO ServiceAccount shop/web: -: v1 ServiceAccount is not mesh config: "
        "skipped",
        "mixed.yaml:9: INFO Secret shop/web-credentials: -: v1 Secret is not mesh config: skipped",
        "mixed.yaml:16: INFO ConfigMap shop/web-settings: -: v1 ConfigMap is not mesh config: "
        "skipped",
        "mixed.yaml:21: INFO Deployment shop/web: -: apps/v1 Deployment is not mesh config: "
        "skipped",
        "mixed.yaml:30: INFO CronJob shop/nightly: -: batch/v1 CronJob is not mesh config: skipped",
        "mixed.yaml:35: INFO RoleBinding shop/web-reader: -: rbac.authorization.k8s.io/v1 "
        "RoleBinding is not mesh config: skipped",
        "mixed.yaml:39: INFO NetworkPolicy shop/deny-all: -: networking.k8s.io/v1 NetworkPolicy "
        "is not mesh config: skipped",
    ]
    assert result.ok
    assert [r.KIND for r in result.resources] == ["Service"]
    assert result.model is not None
    assert list(result.model.services) == [WEB]


def test_a_secret_is_never_echoed():
    result = validate_text(MIXED, "mixed.yaml")
    shown = "\n".join(f.format() + repr(f.to_dict()) for f in result.findings)
    assert "web-credentials" in shown
    assert SECRET_VALUE not in shown
    for contents in ("czNjcjN0", "password", "token"):
        assert contents not in shown
    # Nor does a broken Secret's finding show its values (only the key that repeats).
    broken = validate_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
        f"stringData:\n  password: {SECRET_VALUE}\n  password: {SECRET_VALUE}x\n",
        "secret.yaml",
    )
    assert SECRET_VALUE not in "\n".join(f.format() for f in broken.findings)
    assert [f.severity for f in broken.findings] == [Severity.INFO, Severity.ERROR]


def test_ports_take_their_protocol_from_app_protocol_then_the_name_prefix():
    result = validate_text(MIXED, "mixed.yaml")
    assert result.model is not None
    service = result.model.services[WEB]
    assert service.ports == (
        ServicePort(5432, "TCP", "tcp-db"),
        ServicePort(7000, "TCP", "raw"),  # neither says: TCP, as tulle.kube reads it
        ServicePort(8080, "HTTP", "http-web", 8080),  # the name's prefix
        ServicePort(8081, "HTTP2", "http-plain"),  # appProtocol first
        ServicePort(9000, "GRPC", "admin"),
        ServicePort(9090, "HTTP", "metrics"),
    )  # the UDP port is not the mesh's
    assert service.origins == (ResourceRef("Service", "shop", "web"),)
    # One mapping for files and clusters (tulle.kube reads the cluster's Services with it).
    assert vars(registry)["service_of"] is api_kubernetes.service_of
    assert vars(mapping)["port_protocol"] is api_kubernetes.port_protocol


ROUTES = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: ratings, namespace: shop}
spec:
  hosts: [ratings]
  http:
    - route: [{destination: {host: ratings, port: {number: 9080}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: details, namespace: shop}
spec:
  parentRefs: [{group: "", kind: Service, name: details, port: 9080}]
  rules: [{backendRefs: [{name: details, port: 9080}]}]
"""

SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: ratings, namespace: shop}
spec:
  ports: [{name: http, port: 9080}]
---
apiVersion: v1
kind: Service
metadata: {name: details, namespace: shop}
spec:
  ports: [{name: http, port: 9080}]
"""


def test_routes_find_the_hosts_of_services_in_another_file(tmp_path: Path):
    (tmp_path / "routes.yaml").write_text(ROUTES)
    alone = validate_paths([tmp_path / "routes.yaml"])
    assert sorted({f.message.split(" is ")[0] for f in alone.findings}) == [
        "Service details (details.shop.svc.cluster.local)",
        "host ratings (ratings.shop.svc.cluster.local)",
    ]
    (tmp_path / "services.yaml").write_text(SERVICES)
    together = validate_paths([tmp_path])
    assert [f.format() for f in together.findings] == []
    assert together.model is not None
    assert set(together.model.services) == {
        "ratings.shop.svc.cluster.local",
        "details.shop.svc.cluster.local",
    }
    assert set(together.model.http_routes) == set(together.model.services)


def test_a_route_to_a_port_the_service_does_not_have_is_an_error():
    text = SERVICES + "---\n" + ROUTES.replace("number: 9080", "number: 9090")
    result = validate_text(text, "f.yaml")
    assert [f.format() for f in result.findings] == [
        "f.yaml:19: ERROR VirtualService shop/ratings: "
        "spec.http[0].route[0].destination.port.number: port 9090 is not a port of "
        "ratings.shop.svc.cluster.local (9080)"
    ]


WORKLOADS = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v1}
spec:
  service: reviews
  command: [python3, reviews.py]
  labels: {version: v1}
  ports: [{name: http, port: 9080}, {name: grpc, port: 9090, protocol: GRPC}]
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: reviews-v2}
spec:
  service: reviews
  command: [python3, reviews.py]
  labels: {version: v2}
  ports: [{name: http, port: 9080}, {name: admin, port: 9999, protocol: TCP}]
---
"""


def service(ports: str, selector: str = "{app: reviews}", name: str = "reviews") -> str:
    return (
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
        f"spec:\n  selector: {selector}\n  ports: {ports}\n"
    )


def test_a_service_that_agrees_with_its_workloads_is_their_host():
    ports = "[{name: http, port: 9080}, {name: grpc, port: 9090}, {name: tcp-admin, port: 9999}]"
    result = validate_text(WORKLOADS + service(ports), "f.yaml")
    assert [f.format() for f in result.findings] == []
    assert result.model is not None
    reviews = result.model.services["reviews.default.svc.cluster.local"]
    assert reviews.origins == (
        ResourceRef("Workload", "default", "reviews-v1"),
        ResourceRef("Workload", "default", "reviews-v2"),
        ResourceRef("Service", "default", "reviews"),
    )
    assert [(p.number, p.protocol) for p in reviews.ports] == [
        (9080, "HTTP"),
        (9090, "GRPC"),
        (9999, "TCP"),
    ]


def test_a_service_that_disagrees_with_its_workloads_is_reported():
    ports = (
        "[{name: web, port: 9080}, {name: grpc, port: 9090, appProtocol: http}, "
        "{name: http-extra, port: 9100}]"
    )
    result = validate_text(WORKLOADS + service(ports, "{app: reviews, tier: gold}"), "f.yaml")
    assert [f.format() for f in result.findings] == [
        "f.yaml:23: WARNING Service default/reviews: spec.selector: selector app=reviews, "
        "tier=gold selects none of the Workloads of reviews.default.svc.cluster.local "
        "(Workload default/reviews-v1, Workload default/reviews-v2): on Kubernetes this Service "
        "would send its calls to other pods",
        "f.yaml:24: WARNING Service default/reviews: spec.ports: the Workloads of "
        "reviews.default.svc.cluster.local (Workload default/reviews-v1, Workload "
        "default/reviews-v2) also serve port 9999, which this Service does not have: on "
        "Kubernetes, calls to it through the Service would fail",
        "f.yaml:24: ERROR Service default/reviews: spec.ports[0]: port 9080 is TCP here "
        "(neither appProtocol nor the port name says, so TCP) but HTTP in Workload "
        "default/reviews-v1 at f.yaml:1: set appProtocol 'http' or name the port http-..., or "
        "change the Workload's protocol",
        "f.yaml:24: ERROR Service default/reviews: spec.ports[1]: port 9090 is HTTP here "
        "(appProtocol 'http') but GRPC in Workload default/reviews-v1 at f.yaml:1: set "
        "appProtocol 'grpc' or name the port grpc-..., or change the Workload's protocol",
        "f.yaml:24: ERROR Service default/reviews: spec.ports[2].port: port 9100 of "
        "reviews.default.svc.cluster.local is not a port of its Workloads (Workload "
        "default/reviews-v1, Workload default/reviews-v2: 9080, 9090, 9999): under tulle up "
        "nothing would serve it",
    ]
    assert result.model is None


def test_a_service_no_workload_serves_has_no_endpoints_under_tulle_up():
    ratings = service("[{name: http, port: 9080}]", "{app: ratings}", "ratings")
    result = validate_text(WORKLOADS + ratings, "f.yaml")
    assert [f.format() for f in result.findings] == [
        "f.yaml:21: WARNING Service default/ratings: metadata.name: no Workload serves "
        "ratings.default.svc.cluster.local: under tulle up it has no endpoints, and calls to it "
        "fail with 503 'no healthy endpoint'"
    ]
    assert result.model is not None
    assert result.model.services["ratings.default.svc.cluster.local"].endpoints == ()
    # Files without Workloads describe no local mesh: the same Service is just a host.
    assert validate_text(ratings, "f.yaml").findings == ()


def test_other_services_and_service_mistakes():
    external = (
        "apiVersion: v1\nkind: Service\nmetadata: {name: db}\n"
        "spec: {type: ExternalName, externalName: db.example.com}\n"
    )
    result = validate_text(external, "f.yaml")
    assert [f.format() for f in result.findings] == [
        "f.yaml:4: WARNING Service default/db: spec.type: an ExternalName Service (a DNS alias "
        "of db.example.com) is not supported yet and defines no host; to route to "
        "db.example.com, define it with a ServiceEntry"
    ]
    assert result.model is not None
    assert result.model.services == {}
    typo = service("[{name: http, port: 9080, apProtocol: http}]")
    assert [f.format() for f in validate_text(typo, "f.yaml").findings] == [
        "f.yaml:6: ERROR Service default/reviews: spec.ports[0].apProtocol: unknown field; did "
        "you mean 'appProtocol'?"
    ]
    unnamed = service("[{port: 9080}, {port: 9090}]")
    assert [f.format() for f in validate_text(unnamed, "f.yaml").findings] == [
        "f.yaml:6: ERROR Service default/reviews: spec.ports[0].name: a Service with several "
        "ports must name each"
    ]
    entry = (
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: r}\n"
        "spec: {hosts: [reviews.default.svc.cluster.local], ports: [{number: 80, name: http, "
        "protocol: HTTP}], resolution: STATIC}\n---\n"
    )
    twice = validate_text(entry + service("[{name: http, port: 9080}]"), "f.yaml")
    assert [f.format() for f in twice.findings] == [
        "f.yaml:4: ERROR ServiceEntry default/r: spec.hosts[0]: "
        "reviews.default.svc.cluster.local is already defined by Service default/reviews at "
        "f.yaml:6; define each service once"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n",
            "kind: unknown kind 'Widget'; Tulle reads AuthorizationPolicy, DestinationRule, "
            "Fallback, GRPCRoute, HTTPRoute, Mesh, PeerAuthentication, RateLimit, ServiceEntry, "
            "VirtualService, Workload",
        ),
        (  # a mesh kind with the group left out is a mistake, not Kubernetes
            "apiVersion: v1\nkind: VirtualService\nmetadata: {name: w}\n",
            "apiVersion: VirtualService is not in API group 'v1'; use apiVersion "
            "networking.istio.io/v1 or networking.istio.io/v1beta1 or "
            "networking.istio.io/v1alpha3",
        ),
        (
            "apiVersion: v2\nkind: Service\nmetadata: {name: w}\n",
            "apiVersion: version 'v2' of the core group is not supported; use v1",
        ),
        (  # the Gateway API is not a built-in group: its kinds are not skipped
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: w}\n",
            "kind: Gateway API Gateway is not supported yet: ingress and egress gateways come in "
            "a later issue",
        ),
        (  # nor are the Gateway API kinds Tulle reads none of
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Mystery\nmetadata: {name: w}\n",
            "kind: unknown kind 'Mystery'; Tulle reads AuthorizationPolicy, DestinationRule, "
            "Fallback, GRPCRoute, HTTPRoute, Mesh, PeerAuthentication, RateLimit, ServiceEntry, "
            "VirtualService, Workload",
        ),
        (
            "apiVersion: v1\nkind: List\nitems: []\n",
            "items: a List's items are not read: write each item as a document of its own (---)",
        ),
    ],
    ids=["unknown-group", "mesh-kind-in-core-group", "service-v2", "gateway", "unknown", "list"],
)
def test_what_is_not_kubernetes_stays_an_error(text: str, message: str):
    findings = validate_text(text, "f.yaml").findings
    assert len(findings) == 1
    assert findings[0].severity is Severity.ERROR
    assert f"{findings[0].field}: {findings[0].message}" == message


def test_a_service_as_kubectl_get_prints_it_loads():
    printed = """\
apiVersion: v1
kind: Service
metadata:
  annotations: {kubectl.kubernetes.io/last-applied-configuration: '{"kind":"Service"}'}
  creationTimestamp: "2026-12-01T10:00:00Z"
  labels: {app: productpage}
  name: productpage
  namespace: default
  resourceVersion: "1234"
  uid: 0f6f3b2c-1111-2222-3333-444455556666
spec:
  clusterIP: 10.96.12.34
  clusterIPs: [10.96.12.34]
  internalTrafficPolicy: Cluster
  ipFamilies: [IPv4]
  ipFamilyPolicy: SingleStack
  ports: [{name: http, port: 9080, protocol: TCP, targetPort: 9080, nodePort: 30080}]
  selector: {app: productpage}
  sessionAffinity: None
  type: NodePort
status: {loadBalancer: {}}
"""
    result = validate_text(printed, "f.yaml")
    assert result.findings == ()
    assert result.model is not None
    service = result.model.services["productpage.default.svc.cluster.local"]
    assert (service.ports, service.addresses) == (
        (ServicePort(9080, "HTTP", "http", 9080),),
        ("10.96.12.34",),
    )
