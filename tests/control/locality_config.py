"""What the locality and zone aware translation tests share: a caller ``curl`` in region1/zone1
and an upstream Workload on port 5000 with a ROUND_ROBIN DestinationRule (its locality setting
the test's), the config's model, and the resources a caller of it is sent."""

from __future__ import annotations

from tulle.api import validate_text
from tulle.api.model import MeshModel
from tulle.control.snapshot import Snapshot
from tulle.control.translate import Resources, Translator
from tulle.xds.node import NodeInfo, parse_node_id


def caller_workload(serves: bool = False) -> str:
    """The Workload ``curl`` in region1/zone1; with ``serves``, it serves port 8080 (a service
    of its own, the "local cluster" zone aware routing compares with)."""
    ports = "\n  ports: [{name: http, port: 8080}]" if serves else ""
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: curl}}
spec:
  command: [curl]
  locality: region1/zone1{ports}
"""


def locality_config(upstream: str, balancer: str, caller_serves: bool = False) -> str:
    """:func:`caller_workload`, the Workload ``upstream`` (port 5000) and its DestinationRule,
    whose YAML ``balancer`` continues after ``loadBalancer: {simple: ROUND_ROBIN`` (indented
    as the load balancer's fields, then anything after them)."""
    return f"""\
{caller_workload(caller_serves)}---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {upstream}}}
spec:
  command: [hello]
  ports: [{{name: http, port: 5000}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {upstream}}}
spec:
  host: {upstream}
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
{balancer}"""


def model_of(config: str) -> MeshModel:
    """The model of valid ``config`` (the findings in the failure if it is not)."""
    result = validate_text(config)
    assert result.model is not None, [f.format() for f in result.findings]
    return result.model


def caller_node(pod: str = "curl-0", mode: str = "sidecar") -> NodeInfo:
    """Replica ``pod`` (of its Workload, by the name's prefix) of ``mode``, in ``default``."""
    return parse_node_id(f"{mode}~127.0.0.1~{pod}.default~default.svc.cluster.local")


def caller_resources(snap: Snapshot, pod: str = "curl-0", mode: str = "sidecar") -> Resources:
    """The xDS resources (by type, by name) :func:`caller_node` is sent from ``snap``."""
    return Translator().resources(snap, caller_node(pod, mode))
