"""What the mTLS translation tests (tests/control/test_translate_mtls_*.py) share: the services,
node views and endpoints they translate for, the translation checked as stock clients check it,
and the shapes Istio generates (UpstreamTlsContext of a sidecar and of a proxyless client, its
transport-socket matches) with the DestinationRule and PeerAuthentication they apply."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from fuzz.support.xds_checks import check_node
from tulle.api import validate_text
from tulle.control.registry import Endpoint
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.xds import types

WEB = "web.default.svc.cluster.local"
DB = "db.default.svc.cluster.local"
MESH = (("security.istio.io/tlsMode", "istio"),)
SIDECAR = NodeView("sidecar", "default")
LIBRARY = NodeView("library", "default")
PROXYLESS = NodeView("proxyless", "default")
ADS = {"ads": {}, "resourceApiVersion": "V3"}
TLS_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
RAW_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"


def endpoint(
    address: str,
    account: str = "web",
    labels: tuple[tuple[str, str], ...] = MESH,
    service: str = WEB,
    port: int = 8080,
    protocol: str = "HTTP",
    namespace: str = "default",
) -> Endpoint:
    return Endpoint(service, address, 9000, port, protocol, labels, account, namespace=namespace)


def resources(config: str = "", endpoints: tuple[Endpoint, ...] = (), view: NodeView = SIDECAR):
    result = validate_text(config or "")
    assert result.model is not None, [f.format() for f in result.findings]
    translated = translate(build_snapshot(1, result.model, endpoints), view)
    # What stock clients ask of the resources (protoc-gen-validate rules, grpcio's checks).
    check_node(translated, view.mode == "proxyless")
    return translated


def cluster(translated: Any, name: str) -> dict[str, Any]:
    return MessageToDict(translated[types.CLUSTER][name])


def sidecar_context(sans: list[str], sni: str, alpn: list[str]) -> dict[str, Any]:
    """Istio's UpstreamTlsContext for an in-mesh destination."""
    return {
        "@type": TLS_TYPE,
        "commonTlsContext": {
            "alpnProtocols": alpn,
            "tlsCertificateSdsSecretConfigs": [{"name": "default", "sdsConfig": ADS}],
            "combinedValidationContext": {
                "defaultValidationContext": {
                    "matchTypedSubjectAltNames": [
                        {"sanType": "URI", "matcher": {"exact": san}} for san in sans
                    ]
                },
                "validationContextSdsSecretConfig": {"name": "ROOTCA", "sdsConfig": ADS},
            },
        },
        "sni": sni,
    }


def proxyless_context(sans: list[str]) -> dict[str, Any]:
    """The gRFC A29 form: certificate provider instances, ``match_subject_alt_names``."""
    return {
        "@type": TLS_TYPE,
        "commonTlsContext": {
            "tlsCertificateProviderInstance": {
                "instanceName": "default",
                "certificateName": "default",
            },
            "validationContext": {
                "caCertificateProviderInstance": {
                    "instanceName": "default",
                    "certificateName": "ROOTCA",
                },
                "matchSubjectAltNames": [{"exact": san} for san in sans],
            },
        },
    }


def auto_matches(context: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "name": "tlsMode-istio",
            "match": {"tlsMode": "istio"},
            "transportSocket": {"name": "envoy.transport_sockets.tls", "typedConfig": context},
        },
        {
            "name": "tlsMode-disabled",
            "match": {},
            "transportSocket": {
                "name": "envoy.transport_sockets.raw_buffer",
                "typedConfig": {"@type": RAW_TYPE},
            },
        },
    ]


DESTINATION_RULE = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web
  trafficPolicy:
    tls: {mode: ISTIO_MUTUAL}
    portLevelSettings:
      - port: {number: 9090}
        tls: {mode: DISABLE}
  subsets:
    - name: v1
      labels: {version: v1}
    - name: old
      labels: {version: old}
      trafficPolicy:
        tls: {mode: DISABLE}
        portLevelSettings:
          - port: {number: 9090}
            tls: {mode: ISTIO_MUTUAL}
    - name: auto
      labels: {version: auto}
      trafficPolicy: {loadBalancer: {simple: RANDOM}}
"""


def peer_authentication(name: str, namespace: str, mode: str, extra: str = "") -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  mtls: {{mode: {mode}}}
{extra}---
"""
