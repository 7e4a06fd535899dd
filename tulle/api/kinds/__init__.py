"""The config kinds Tulle reads, one module per API group, and the table from
``apiVersion``/``kind`` to the model that validates it.

:data:`KINDS` are the mesh's config kinds (each a CRD on Kubernetes); :data:`KUBERNETES_KINDS`
the Kubernetes built-in kinds read from config files beside them (a Service, as a host)."""

from __future__ import annotations

from tulle.api.kinds.base import Resource
from tulle.api.kinds.gateway import HTTPRoute
from tulle.api.kinds.grpc_route import GRPCRoute
from tulle.api.kinds.kubernetes import KubernetesService
from tulle.api.kinds.native import Fallback, Mesh, RateLimit, Workload
from tulle.api.kinds.networking import DestinationRule, ServiceEntry, VirtualService
from tulle.api.kinds.security import AuthorizationPolicy, PeerAuthentication

KINDS: tuple[type[Resource], ...] = (
    VirtualService,
    DestinationRule,
    ServiceEntry,
    PeerAuthentication,
    AuthorizationPolicy,
    HTTPRoute,
    GRPCRoute,
    Workload,
    RateLimit,
    Fallback,
    Mesh,
)

KUBERNETES_KINDS: tuple[type[Resource], ...] = (KubernetesService,)
"""Kubernetes built-in kinds read from files (not CRDs: never installed, watched or applied as
the mesh's config kinds are)."""

_READ = (*KINDS, *KUBERNETES_KINDS)
_BY_GROUP_KIND = {(model.GROUP, model.KIND): model for model in _READ}


def supported_api_versions(model: type[Resource]) -> tuple[str, ...]:
    """``group/version`` strings accepted for ``model`` (``version`` alone in the core
    group)."""
    return tuple(
        f"{model.GROUP}/{version}" if model.GROUP else version for version in model.VERSIONS
    )


def reads_kind(kind: str) -> bool:
    """Whether Tulle reads a kind of this name, in some API group."""
    return any(kind == model.KIND for model in _READ)


class UnknownKindError(LookupError):
    """No model for an ``apiVersion``/``kind`` pair; ``field`` names the one to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def model_for(api_version: str, kind: str) -> type[Resource]:
    """The model for ``apiVersion`` and ``kind``; raises UnknownKindError saying what to write."""
    group, _, version = api_version.rpartition("/")
    model = _BY_GROUP_KIND.get((group, kind))
    if model is None:
        same_kind = [m for m in _READ if kind == m.KIND]
        if same_kind:
            raise UnknownKindError(
                "apiVersion",
                f"{kind} is not in API group {group or api_version!r}; use apiVersion "
                f"{' or '.join(supported_api_versions(same_kind[0]))}",
            )
        known = ", ".join(sorted(m.KIND for m in KINDS))
        raise UnknownKindError("kind", f"unknown kind {kind!r}; Tulle reads {known}")
    if version not in model.VERSIONS:
        raise UnknownKindError(
            "apiVersion",
            f"version {version!r} of {group or 'the core group'} is not supported; use "
            f"{' or '.join(supported_api_versions(model))}",
        )
    return model


__all__ = [
    "KINDS",
    "KUBERNETES_KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "Fallback",
    "GRPCRoute",
    "HTTPRoute",
    "KubernetesService",
    "Mesh",
    "PeerAuthentication",
    "RateLimit",
    "Resource",
    "ServiceEntry",
    "UnknownKindError",
    "VirtualService",
    "Workload",
    "model_for",
    "reads_kind",
    "supported_api_versions",
]
