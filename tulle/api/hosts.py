"""Host names in short and fully qualified forms, resolved against a resource's namespace.

``catalog`` in namespace ``default``, ``catalog.default`` and ``catalog.default.svc.cluster.local``
all name the same service, as in Kubernetes and Istio."""

from __future__ import annotations

import re
from collections.abc import Collection

CLUSTER_DOMAIN = "cluster.local"

_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(\*|\*\.)?({_LABEL}\.)*{_LABEL}$|^\*$")


def is_valid_host(host: str) -> bool:
    """A DNS name of lowercase labels, optionally starting with a ``*.`` wildcard, or ``*``."""
    return len(host) <= 253 and bool(_HOSTNAME.match(host))


def fqdn(host: str, namespace: str, namespaces: Collection[str] = ()) -> str:
    """The fully qualified name of ``host`` as written in a resource of ``namespace``.

    - ``catalog`` → ``catalog.<namespace>.svc.cluster.local``
    - ``catalog.shop`` → ``catalog.shop.svc.cluster.local`` when ``shop`` is a namespace of the
      mesh (``namespaces``); otherwise it is an external name and stays as written
    - ``catalog.shop.svc`` → ``catalog.shop.svc.cluster.local``
    - anything else (``api.example.com``, ``*.example.com``, ``*``) stays as written.
    """
    host = host.lower()
    if host == "*" or host.startswith("*."):
        return host
    labels = host.split(".")
    if len(labels) == 1:
        return f"{host}.{namespace}.svc.{CLUSTER_DOMAIN}"
    if len(labels) == 2 and labels[1] in namespaces:
        return f"{host}.svc.{CLUSTER_DOMAIN}"
    if len(labels) == 3 and labels[2] == "svc":
        return f"{host}.{CLUSTER_DOMAIN}"
    return host


def short_names(host: str) -> tuple[str, ...]:
    """Every name a client in the mesh may use for ``host``, longest first.

    ``catalog.default.svc.cluster.local`` → that, ``catalog.default.svc``, ``catalog.default``,
    ``catalog``. An external host has only its own name."""
    suffix = f".svc.{CLUSTER_DOMAIN}"
    if not host.endswith(suffix):
        return (host,)
    service_namespace = host[: -len(suffix)]
    service = service_namespace.split(".")[0]
    return (host, f"{service_namespace}.svc", service_namespace, service)


def host_matches(pattern: str, host: str) -> bool:
    """Whether ``host`` is covered by ``pattern`` (exact, ``*``, or ``*.suffix``)."""
    if pattern == "*":
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return pattern == host
