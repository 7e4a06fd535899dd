"""Offers shared by every ADS stream: what a group of nodes is offered of one type, computed and
serialized once per snapshot, not once per stream.

Nodes that differ only in address and replica get the same resources (the control plane
translates per mode, namespace and workload: :func:`share_key`). For each such group and type
the :class:`Catalog` asks the :class:`ResourceSource` once, serializes each resource once, and
for each selection of names (a wildcard, or the names a client subscribed to) makes one
:class:`~tulle.xds.session.Offer`: the version, the chosen resources and the DiscoveryResponse
serialized but for its nonce. The response bytes are shared by every offer with the same type
and version; a stream only appends its nonce (:func:`with_nonce`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from tulle.xds.node import NodeInfo
from tulle.xds.session import Offer, select, version_of

ShareKey = tuple[str, str, str]


class ResourceSource(Protocol):
    """Where the server gets the resources for a node.

    The resources may depend on the node's mode, namespace and workload only (see
    :func:`share_key`): nodes that differ in nothing else are served from one computation."""

    def resources(self, node: NodeInfo, type_url: str) -> Mapping[str, Any]:
        """Every resource of ``type_url`` the node may subscribe to, by name."""
        ...


def share_key(node: NodeInfo) -> ShareKey:
    """What of a node its resources may depend on: nodes with the same key share them."""
    return (node.mode, node.namespace, node.workload)


def serialize(message: Any) -> bytes:
    """Deterministic bytes of a protobuf message (for versions)."""
    data: bytes = message.SerializeToString(deterministic=True)
    return data


_NONCE_TAG = b"\x2a"  # DiscoveryResponse.nonce: field 5, length-delimited


def with_nonce(body: bytes, nonce: str) -> bytes:
    """A serialized DiscoveryResponse without a nonce, with ``nonce``: protobuf reads fields in
    any order, so the shared bytes are used as they are and the nonce field is appended."""
    data = nonce.encode()
    length = len(data)
    prefix = bytearray()
    while length > 0x7F:
        prefix.append(length & 0x7F | 0x80)
        length >>= 7
    prefix.append(length)
    return b"".join((body, _NONCE_TAG, prefix, data))


def response_body(type_url: str, version: str, payloads: Iterable[tuple[str, bytes]]) -> bytes:
    """The DiscoveryResponse (without nonce) holding ``payloads``: (resource type URL, bytes)."""
    message = discovery_pb2.DiscoveryResponse(
        version_info=version,
        type_url=type_url,
        resources=[any_pb2.Any(type_url=url, value=value) for url, value in payloads],
    )
    data: bytes = message.SerializeToString()
    return data


@dataclass(slots=True)
class _ResourceSet:
    """One group's resources of one type under the current snapshot, and the offers made of
    them so far, by selection."""

    type_url: str
    available: Mapping[str, Any]
    payloads: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    offers: dict[frozenset[str], Offer] = field(default_factory=dict)

    def payload(self, name: str) -> tuple[str, bytes]:
        """The resource's type URL and serialized bytes (serialized on first use)."""
        found = self.payloads.get(name)
        if found is None:
            resource = self.available[name]
            url = "type.googleapis.com/" + resource.DESCRIPTOR.full_name
            found = self.payloads[name] = (url, serialize(resource))
        return found


class Catalog:
    """Offers for every group, type and selection under the current snapshot; :meth:`clear`
    when the source changes."""

    def __init__(self, source: ResourceSource) -> None:
        self.source = source
        self._sets: dict[tuple[ShareKey, str], _ResourceSet] = {}
        self._bodies: dict[tuple[str, str], bytes] = {}
        self._earlier: dict[tuple[str, str], bytes] = {}  # the bodies before the last clear()
        self.serialized = 0
        """How many response bodies were serialized (one per type and version)."""

    def clear(self) -> None:
        """Forget every offer: the next ones are computed from the source anew. The response
        bodies of the versions still offered after it are kept (versions follow content)."""
        self._sets.clear()
        self._earlier, self._bodies = self._bodies, {}

    def offer(
        self, key: ShareKey, node: NodeInfo, type_url: str, selection: frozenset[str]
    ) -> Offer:
        """What a node of group ``key`` whose subscription chooses ``selection`` gets now."""
        resources = self._sets.get((key, type_url))
        if resources is None:
            available = self.source.resources(node, type_url)
            resources = self._sets[(key, type_url)] = _ResourceSet(type_url, available)
        offer = resources.offers.get(selection)
        if offer is None:
            offer = resources.offers[selection] = self._make(resources, selection)
        return offer

    def _make(self, resources: _ResourceSet, selection: frozenset[str]) -> Offer:
        names = select(resources.available, selection)
        payloads = [resources.payload(name) for name in names]
        version = version_of(
            (name, value) for name, (_, value) in zip(names, payloads, strict=True)
        )
        key = (resources.type_url, version)
        body = self._bodies.get(key) or self._earlier.get(key)
        if body is None:
            body = response_body(resources.type_url, version, payloads)
            self.serialized += 1
        self._bodies[key] = body
        chosen = tuple((name, resources.available[name]) for name in names)
        return Offer(resources.type_url, version, chosen, body)
