"""The client side of ADS (sidecar and library): subscribe, keep the last good config, ACK what
the engine accepts and NACK what it rejects, reconnect with backoff when the control plane goes
away. Listeners and clusters are subscribed by wildcard; routes and endpoints by the names the
listeners and clusters refer to. A workload with a certificate also subscribes to the trust
bundle (Secret ``ROOTCA``), which goes to its certificate keeper, not to the engine."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from envoy.config.cluster.v3 import cluster_pb2
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.config.listener.v3 import listener_pb2
from envoy.config.route.v3 import route_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from tulle.xds import types
from tulle.xds.grpc_stream import GrpcStream, GrpcStreamError

log = logging.getLogger(__name__)

_MESSAGES = {
    types.LISTENER: listener_pb2.Listener,
    types.ROUTE: route_pb2.RouteConfiguration,
    types.CLUSTER: cluster_pb2.Cluster,
    types.ENDPOINT: endpoint_pb2.ClusterLoadAssignment,
}
_ORDER = (types.CLUSTER, types.ENDPOINT, types.LISTENER, types.ROUTE)
ADS_METHOD = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"

Resources = Mapping[str, Mapping[str, Any]]
Accept = Callable[[Resources, str], str | None]
"""Called with a candidate config and its version; returns None to accept, or the NACK reason."""


def route_names(listeners: Mapping[str, Any]) -> list[str]:
    """The RouteConfiguration names the listeners' HTTP connection managers ask for over RDS."""
    names: set[str] = set()
    for listener in listeners.values():
        managers = []
        if listener.HasField("api_listener"):
            managers.append(listener.api_listener.api_listener)
        for chain in listener.filter_chains:
            managers.extend(
                f.typed_config for f in chain.filters if f.typed_config.type_url == types.HCM_TYPE
            )
        for packed in managers:
            manager = hcm.HttpConnectionManager()
            if packed.Unpack(manager) and manager.HasField("rds"):
                names.add(manager.rds.route_config_name)
    return sorted(names)


def endpoint_names(clusters: Mapping[str, Any]) -> list[str]:
    """The ClusterLoadAssignment names the EDS clusters ask for."""
    return sorted(
        c.eds_cluster_config.service_name or c.name
        for c in clusters.values()
        if c.type == cluster_pb2.Cluster.EDS
    )


@dataclass
class XdsClient:
    """One ADS stream to the control plane, re-opened when it breaks."""

    address: str
    node_id: str
    accept: Accept
    resources: dict[str, dict[str, Any]] = field(default_factory=lambda: {t: {} for t in _ORDER})
    versions: dict[str, str] = field(default_factory=dict)
    last_nack: dict[str, str] = field(default_factory=dict)
    connected: bool = False
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    tls: ssl.SSLContext | None = None  # the secure xDS port: the control plane verified with it
    credential: Callable[[], str] | None = None  # the bootstrap token, read at each connect
    # Called with the trust bundle (PEM) the control plane pushes as Secret ROOTCA; when set,
    # the stream subscribes to it (a root rotation reaches the workload at once).
    on_trust_bundle: Callable[[bytes], None] | None = None
    _call: GrpcStream | None = None
    _subscribed: dict[str, list[str]] = field(default_factory=dict)
    _received: set[str] = field(default_factory=set)

    def _request(
        self, type_url: str, version: str = "", nonce: str = "", error: str | None = None
    ) -> None:
        message = discovery_pb2.DiscoveryRequest(
            type_url=type_url,
            resource_names=self._subscribed.get(type_url, []),
            version_info=version,
            response_nonce=nonce,
        )
        message.node.id = self.node_id
        if error is not None:
            message.error_detail.code = 3  # INVALID_ARGUMENT
            message.error_detail.message = error
        if self._call is not None:
            self._call.send(message.SerializeToString())

    def _subscribe(self, type_url: str, names: list[str]) -> None:
        if self._subscribed.get(type_url) != names:
            self._subscribed[type_url] = names
            self._request(type_url, self.versions.get(type_url, ""))

    def snapshot(self) -> Resources:
        """The resources in force, by type."""
        return MappingProxyType({t: MappingProxyType(dict(r)) for t, r in self.resources.items()})

    def handle(self, response: Any) -> None:
        """Apply one DiscoveryResponse: ACK it or NACK it, then follow the references."""
        type_url = response.type_url
        if type_url == types.SECRET and self.on_trust_bundle is not None:
            self._trust_bundle(response)
            return
        message_type = _MESSAGES.get(type_url)
        if message_type is None:
            self._request(
                type_url, response.version_info, response.nonce, f"type {type_url} is not supported"
            )
            return
        incoming: dict[str, Any] = {}
        for packed in response.resources:
            resource = message_type()
            packed.Unpack(resource)
            name = resource.cluster_name if type_url == types.ENDPOINT else resource.name
            incoming[name] = resource
        if type_url in types.FULL_STATE_TYPES:
            updated = incoming
        else:
            updated = {**self.resources[type_url], **incoming}
            wanted = set(self._subscribed.get(type_url, []))
            updated = {k: v for k, v in updated.items() if k in wanted}
        candidate = {**self.resources, type_url: updated}
        reason = self.accept(MappingProxyType(candidate), response.version_info)
        if reason is not None:
            log.warning(
                "rejecting %s version %s: %s",
                types.SHORT_NAMES.get(type_url),
                response.version_info,
                reason,
            )
            self.last_nack[type_url] = reason
            self._request(type_url, self.versions.get(type_url, ""), response.nonce, reason)
            return
        self.resources = candidate
        self.versions[type_url] = response.version_info
        self.last_nack.pop(type_url, None)
        self._received.add(type_url)
        self._request(type_url, response.version_info, response.nonce)
        if type_url == types.LISTENER:
            self._subscribe(types.ROUTE, route_names(updated))
        elif type_url == types.CLUSTER:
            self._subscribe(types.ENDPOINT, endpoint_names(updated))
        self._check_ready()

    def _trust_bundle(self, response: Any) -> None:
        """ACK the ROOTCA secret and hand its bundle on; NACK a secret without roots. It is
        not part of the config the engine compiles: the certificate keeper uses it."""
        bundle = None
        for packed in response.resources:
            secret = secret_pb2.Secret()
            packed.Unpack(secret)
            if secret.name == types.TRUST_BUNDLE_SECRET:
                bundle = secret.validation_context.trusted_ca.inline_bytes
        if not bundle:
            reason = (
                f"secret {types.TRUST_BUNDLE_SECRET} has no validation_context.trusted_ca roots"
            )
            self.last_nack[types.SECRET] = reason
            self._request(types.SECRET, self.versions.get(types.SECRET, ""), response.nonce, reason)
            return
        self.versions[types.SECRET] = response.version_info
        self.last_nack.pop(types.SECRET, None)
        self._request(types.SECRET, response.version_info, response.nonce)
        assert self.on_trust_bundle is not None
        self.on_trust_bundle(bundle)

    def _check_ready(self) -> None:
        needed = {types.LISTENER, types.CLUSTER}
        if self._subscribed.get(types.ROUTE):
            needed.add(types.ROUTE)
        if self._subscribed.get(types.ENDPOINT):
            needed.add(types.ENDPOINT)
        if needed <= self._received:
            self.ready.set()

    async def _stream(self) -> None:
        metadata = []
        if self.credential is not None:
            try:
                metadata.append(("authorization", f"Bearer {self.credential()}"))
            except (OSError, ValueError) as error:
                raise GrpcStreamError("UNAUTHENTICATED", f"no credential: {error}") from None
        self._call = await GrpcStream.open(
            self.address, ADS_METHOD, tls=self.tls, metadata=metadata
        )
        try:
            for type_url in (types.CLUSTER, types.LISTENER):
                self._subscribed.setdefault(type_url, [])
                self._request(type_url, self.versions.get(type_url, ""))
            for type_url in (types.ENDPOINT, types.ROUTE):
                if self._subscribed.get(type_url):
                    self._request(type_url, self.versions.get(type_url, ""))
            if self.on_trust_bundle is not None:
                self._subscribed[types.SECRET] = [types.TRUST_BUNDLE_SECRET]
                self._request(types.SECRET, self.versions.get(types.SECRET, ""))
            while True:
                message = await self._call.receive()
                try:
                    response = discovery_pb2.DiscoveryResponse.FromString(message)
                except DecodeError as error:
                    raise GrpcStreamError("INTERNAL", f"bad DiscoveryResponse: {error}") from None
                self.connected = True
                self.handle(response)
        finally:
            self._call.close()
            self._call = None

    async def run(self) -> None:
        """Keep a stream open until cancelled; the last good config stays between streams."""
        backoff = 0.1
        while True:
            try:
                await self._stream()
            except GrpcStreamError as error:
                log.info("xDS stream to %s ended: %s", self.address, error)
            finally:
                if self.connected:
                    backoff = 0.1  # the stream worked: start the backoff over
                self.connected = False
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)
