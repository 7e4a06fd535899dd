"""The config kinds Tulle reads, one module per API group, and the table from
``apiVersion``/``kind`` to the model that validates it."""

from __future__ import annotations

from tulle.api.kinds.base import Resource
from tulle.api.kinds.gateway import HTTPRoute
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
    Workload,
    RateLimit,
    Fallback,
    Mesh,
)

_BY_GROUP_KIND = {(model.GROUP, model.KIND): model for model in KINDS}


def supported_api_versions(model: type[Resource]) -> tuple[str, ...]:
    """``group/version`` strings accepted for ``model``."""
    return tuple(f"{model.GROUP}/{version}" for version in model.VERSIONS)


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
        same_kind = [m for m in KINDS if kind == m.KIND]
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
            f"version {version!r} of {group} is not supported; use "
            f"{' or '.join(supported_api_versions(model))}",
        )
    return model


__all__ = [
    "KINDS",
    "AuthorizationPolicy",
    "DestinationRule",
    "Fallback",
    "HTTPRoute",
    "Mesh",
    "PeerAuthentication",
    "RateLimit",
    "Resource",
    "ServiceEntry",
    "UnknownKindError",
    "VirtualService",
    "Workload",
    "model_for",
    "supported_api_versions",
]
