"""The mesh model's shared vocabulary: :data:`Pairs`, :data:`UNLIMITED` and
:class:`ResourceRef` (which resource a part of the model came from)."""

from __future__ import annotations

from dataclasses import dataclass

Pairs = tuple[tuple[str, str], ...]
"""An immutable mapping written as sorted ``(key, value)`` pairs (labels, headers)."""

UNLIMITED = None
"""A limit that is not set: no limit."""


@dataclass(frozen=True)
class ResourceRef:
    """Which resource a part of the model came from: ``Kind namespace/name``."""

    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"
