"""The server side of one ADS stream, state of the world, as a sans-IO state machine.

It takes the client's DiscoveryRequests (as plain values) and, when offered what a node with its
subscription should have, says what to send. The rules (measured against grpcio, see
shared/NOTES.md):

- respond when the subscribed names change or when the offered resources differ from what was
  last sent; never because of a nonce (grpcio pipelines requests, so ACKs with old nonces arrive,
  and answering them makes an endless loop);
- a NACK records the client's message and keeps the node on its last ACKed version; the same
  resources are not sent again, only a new version is.

What to offer does not depend on the session, only on the resources and the selection of names
(:func:`make_offer`): every stream with the same resources and selection shares one
:class:`Offer`, computed once, and the session only decides whether to send it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tulle.xds.types import FULL_STATE_TYPES

ALL: frozenset[str] = frozenset({"*"})
"""The selection of a wildcard subscription: every resource of the type."""


@dataclass(frozen=True)
class Request:
    """What a DiscoveryRequest says, as plain values."""

    type_url: str
    names: frozenset[str]
    version: str = ""
    nonce: str = ""
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Offer:
    """What a node subscribed to a selection of names would be sent now: the version and the
    chosen resources (and, from the gRPC adapter, the response already serialized but for its
    nonce). One offer serves every stream with the same resources and selection."""

    type_url: str
    version: str
    resources: tuple[tuple[str, Any], ...]
    body: bytes = b""


@dataclass(frozen=True, slots=True)
class Response:
    """What to send: the version, nonce and resources of one type."""

    type_url: str
    version: str
    nonce: str
    resources: tuple[tuple[str, Any], ...]


@dataclass(slots=True)
class TypeState:
    """Per resource type: what the client asked for, what it was sent, what it accepted."""

    names: frozenset[str] = frozenset()
    wildcard: bool = False
    sent_version: str | None = None
    sent_nonce: str | None = None
    sent_names: frozenset[str] | None = None
    sent: tuple[tuple[str, Any], ...] = ()
    acked_version: str | None = None
    nack: str | None = None
    nacked_version: str | None = None
    requests: int = 0

    @property
    def subscription(self) -> frozenset[str]:
        """The subscription as last asked for (wildcard as ``{"*"}``)."""
        return ALL if self.wildcard else self.names

    @property
    def selection(self) -> frozenset[str]:
        """Which resources the subscription chooses: :data:`ALL`, or the names."""
        return ALL if self.wildcard or "*" in self.names else self.names


def version_of(resources: Iterable[tuple[str, bytes]]) -> str:
    """A version that changes exactly when the resources' content does."""
    digest = hashlib.sha256()
    for name, payload in sorted(resources):
        digest.update(name.encode())
        digest.update(b"\0")
        digest.update(payload)
        digest.update(b"\1")
    return digest.hexdigest()[:16]


def select(available: Mapping[str, Any], selection: frozenset[str]) -> list[str]:
    """The names of ``available`` that ``selection`` chooses, sorted."""
    if "*" in selection:
        return sorted(available)
    return sorted(name for name in selection if name in available)


def make_offer(
    type_url: str,
    available: Mapping[str, Any],
    selection: frozenset[str],
    serialize: Callable[[Any], bytes],
) -> Offer:
    """The offer of ``available`` (every resource the node may have, by name) to ``selection``."""
    chosen = tuple((name, available[name]) for name in select(available, selection))
    version = version_of((name, serialize(resource)) for name, resource in chosen)
    return Offer(type_url, version, chosen)


@dataclass(slots=True)
class AdsSession:
    """One client stream: its subscriptions and what it was sent, per type."""

    node_id: str
    types: dict[str, TypeState] = field(default_factory=dict)
    _nonces: int = 0

    def receive(self, request: Request) -> bool:
        """Record a request; True when it changed the subscription (a response may be due)."""
        state = self.types.get(request.type_url)
        if state is None:
            state = self.types[request.type_url] = TypeState()
        state.requests += 1
        first = state.requests == 1
        if request.nonce and request.nonce == state.sent_nonce:
            if request.error is None:
                state.acked_version = request.version or state.sent_version
                state.nack = None
                state.nacked_version = None
            else:
                state.nack = request.error
                state.nacked_version = state.sent_version
        wildcard = first and not request.names and request.type_url in FULL_STATE_TYPES
        if first:
            state.wildcard = wildcard
        changed = first or (not state.wildcard and request.names != state.names)
        state.names = request.names
        return changed

    def wanted(self, type_url: str, available: Mapping[str, Any]) -> list[str]:
        """The names of ``available`` this client subscribes to."""
        state = self.types.get(type_url)
        if state is None:
            return []
        return select(available, state.selection)

    def desired_version(
        self, type_url: str, available: Mapping[str, Any], serialize: Callable[[Any], bytes]
    ) -> str:
        """The version this client would be sent now (to tell whether it is current)."""
        names = self.wanted(type_url, available)
        return version_of((name, serialize(available[name])) for name in names)

    def respond(self, offer: Offer) -> Response | None:
        """The response to send now that ``offer`` is what the client's subscription chooses,
        or None when the client is up to date (or refused this very version)."""
        state = self.types.get(offer.type_url)
        if state is None:
            return None
        subscription = state.subscription
        if subscription == state.sent_names and offer.version in (
            state.sent_version,
            state.nacked_version,
        ):
            return None
        self._nonces += 1
        nonce = str(self._nonces)
        state.sent_version, state.sent_nonce, state.sent_names = offer.version, nonce, subscription
        state.sent = offer.resources
        return Response(offer.type_url, offer.version, nonce, offer.resources)

    def due(
        self,
        type_url: str,
        available: Mapping[str, Any],
        serialize: Callable[[Any], bytes],
    ) -> Response | None:
        """The response to send for ``type_url`` now, or None when the client is up to date.

        ``available`` maps every resource name the node may have to its resource."""
        state = self.types.get(type_url)
        if state is None:
            return None
        return self.respond(make_offer(type_url, available, state.selection, serialize))
