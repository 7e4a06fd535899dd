"""mTLS in the translated resources, compared with the shapes Istio generates: the client side of
proxyless gRPC: auto mTLS when every endpoint is in the mesh, the DestinationRule, plain text
without endpoints, and the sidecar's forms grpcio would not use."""

from __future__ import annotations

import pytest

from fuzz.support.checks import CheckError
from fuzz.support.xds_checks import check_grpc_tls
from tests.control.mtls_resources import (
    DESTINATION_RULE,
    MESH,
    PROXYLESS,
    WEB,
    cluster,
    endpoint,
    proxyless_context,
    resources,
)
from tulle.xds import types


def test_proxyless_auto_mtls_when_every_endpoint_is_in_the_mesh():
    config = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""
    translated = resources(
        config,
        (
            endpoint("10.0.0.1", "web", (*MESH, ("version", "v1"))),
            endpoint("10.0.0.2", "web2", (("version", "v2"),)),
        ),
        PROXYLESS,
    )
    sans = ["spiffe://cluster.local/ns/default/sa/web", "spiffe://cluster.local/ns/default/sa/web2"]
    v1 = cluster(translated, f"outbound|8080|v1|{WEB}")
    assert v1["transportSocket"] == {
        "name": "envoy.transport_sockets.tls",
        "typedConfig": proxyless_context(sans),
    }
    assert "transportSocketMatches" not in v1
    # One endpoint outside the mesh: grpcio cannot choose per endpoint, so plain text.
    assert "transportSocket" not in cluster(translated, f"outbound|8080||{WEB}")
    assert "transportSocket" not in cluster(translated, f"outbound|8080|v2|{WEB}")


def test_proxyless_follows_the_destination_rule():
    translated = resources(
        DESTINATION_RULE,
        (endpoint("10.0.0.1", labels=()), endpoint("10.0.0.2", port=9090)),
        PROXYLESS,
    )
    sans = ["spiffe://cluster.local/ns/default/sa/web"]
    found = cluster(translated, f"outbound|8080||{WEB}")  # ISTIO_MUTUAL, even out of the mesh
    assert found["transportSocket"]["typedConfig"] == proxyless_context(sans)
    assert "transportSocket" not in cluster(translated, f"outbound|9090||{WEB}")  # DISABLE


def test_proxyless_cluster_without_endpoints_is_plain_text():
    config = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.default.svc.cluster.local]
  ports: [{number: 8080, protocol: HTTP, name: http}]
  location: MESH_INTERNAL
  resolution: STATIC
"""
    assert "transportSocket" not in cluster(
        resources(config, view=PROXYLESS), f"outbound|8080||{WEB}"
    )


def test_the_sidecar_forms_are_what_grpcio_would_not_use():
    """The grpcio checks the proxyless clusters pass (above) catch the sidecar's forms: grpcio
    ignores transport_socket_matches and NACKs SDS."""
    endpoints = (endpoint("10.0.0.1"), endpoint("10.0.0.2", port=9090))
    sidecar = resources(DESTINATION_RULE, endpoints)[types.CLUSTER]
    with pytest.raises(CheckError, match=r"xds\.grpc-socket-matches"):
        check_grpc_tls(resources(endpoints=endpoints)[types.CLUSTER][f"outbound|8080||{WEB}"])
    with pytest.raises(CheckError, match=r"xds\.grpc-tls-unsupported"):
        check_grpc_tls(sidecar[f"outbound|8080||{WEB}"])
    check_grpc_tls(sidecar[f"outbound|9090||{WEB}"])  # plain text: nothing to say
