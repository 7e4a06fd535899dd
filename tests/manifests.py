"""The documents tests apply most, written once: a local-mode Workload, a VirtualService with
its ``http`` routes and a DestinationRule with a traffic policy (all YAML, ``---``-terminated so
they can be joined)."""

from __future__ import annotations


def workload(name: str, spec: str = "") -> str:
    """The local-mode Workload ``name`` (``command: [name]``; its pods are ``name-N``, labelled
    ``app: name``) with ``spec``: more lines of its spec, each indented by two spaces and
    newline-terminated."""
    return f"""\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  command: [{name}]
{spec}---
"""


def virtual_service(http: str, host: str = "web") -> str:
    """A VirtualService for ``host`` (its name too) with ``http``: YAML list items indented by
    four spaces."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {host}}}
spec:
  hosts: [{host}]
  http:
{http}
---
"""


def destination_rule(traffic_policy: str = "{}", subsets: str = "", host: str = "web") -> str:
    """A DestinationRule for ``host`` with ``traffic_policy`` (YAML flow style) and ``subsets``
    (the ``subsets:`` line(s), indented by two spaces)."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy: {traffic_policy}
{subsets}
---
"""


# The local-mode Workload ``web`` (port 8080) and a DENY policy on its ``/admin*`` paths.
WEB_DENYING_ADMIN = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: web}
spec:
  command: [web]
  ports: [{name: http, port: 8080}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-admin}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules:
    - to: [{operation: {paths: ["/admin*"]}}]
---
"""
