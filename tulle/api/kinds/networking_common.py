"""What Istio's ``networking.istio.io`` kinds share: their group and versions, the
:class:`NetworkingResource` base, route weights and port selectors."""

from __future__ import annotations

from typing import Annotated, ClassVar

from pydantic import Field

from tulle.api.kinds.base import INT32_MAX, PortNumber, Resource, Strict

NETWORKING_GROUP = "networking.istio.io"
NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")
Weight = Annotated[int, Field(ge=0, le=INT32_MAX)]
"""Relative: a destination gets ``weight / sum of weights`` (Istio's VirtualService reference)."""


class PortSelector(Strict):
    """``port: {number: 8080}``."""

    number: PortNumber


class NetworkingResource(Resource):
    """Base of the ``networking.istio.io`` kinds."""

    GROUP: ClassVar[str] = NETWORKING_GROUP
    VERSIONS: ClassVar[tuple[str, ...]] = NETWORKING_VERSIONS
