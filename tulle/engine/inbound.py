"""Inbound policy from the ``virtualInbound`` listener, per app port: the mTLS mode
(PeerAuthentication: which transports the port's filter chains accept), the RBAC filters
(AuthorizationPolicy) and the local rate limit (RateLimit) the control plane put in that port's
filter chains (an mTLS chain and a plain-text one carry the same filters). An HTTP port's RBAC
judges each request (:func:`refusal`); network RBAC filters (an opaque TCP port's) judge each
connection once, before its first byte reaches the app (:func:`connection_refusal`). A chain
with a network filter this proxy does not know is refused (NACK): it cannot be honoured."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from envoy.extensions.filters.http.rbac.v3 import rbac_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import (
    http_connection_manager_pb2 as hcm,
)
from envoy.extensions.filters.network.rbac.v3 import rbac_pb2 as network_rbac_pb2

from tulle.codec.paths import BASE, PathNormalization
from tulle.engine import errors
from tulle.engine.config import BucketSpec, bucket
from tulle.engine.listener_filters import connection_managers
from tulle.engine.matching import ConfigError
from tulle.engine.message import Request
from tulle.engine.ratelimit import TokenBucket
from tulle.engine.rbac import (
    NO_HEADERS,
    Peer,
    RbacFilter,
    authorize,
    compile_network_rbac,
    compile_rbac,
    connection_denial,
)
from tulle.engine.tls_config import inbound_alpn, inbound_mode
from tulle.xds.types import (
    HCM_TYPE,
    NETWORK_RBAC_TYPE,
    RATELIMIT_FILTER,
    RBAC_FILTER,
    TCP_PROXY_TYPE,
)

INBOUND_LISTENER = "virtualInbound"


@dataclass
class InboundPolicy:
    """What an app port enforces."""

    rbac: tuple[RbacFilter, ...] = ()  # per request (HTTP)
    connection_rbac: tuple[RbacFilter, ...] = ()  # per connection (network RBAC: TCP ports)
    bucket: TokenBucket | None = None
    tcp: bool = False  # an opaque TCP port: bytes to the app, no HTTP parsing
    service: str = ""  # the service the port serves (the inbound metrics' destination_service)
    # PeerAuthentication: "STRICT" (mTLS only), "PERMISSIVE" (mTLS or plain text, told apart by
    # the first bytes) or "DISABLE" (plain text only); ``alpn``: what the mTLS side offers.
    mode: str = "DISABLE"
    alpn: tuple[str, ...] = ()
    # X-Forwarded-For addresses the port trusts (the HttpConnectionManager's
    # ``xff_num_trusted_hops``): where RBAC's ``remote_ip`` (remoteIpBlocks) finds the client.
    trusted_hops: int = 0


def inbound_policies(
    listeners: Mapping[str, Any], now: float, previous: Mapping[int, InboundPolicy] | None = None
) -> dict[int, InboundPolicy]:
    """An InboundPolicy per app port of the node's workload. A port whose rate limit is the
    same as in ``previous`` (the policies in force) keeps that bucket, tokens and all: every
    config the control plane pushes (an endpoint registered anywhere in the mesh is one) comes
    here, and only a change of the limit itself may refill it."""
    listener = listeners.get(INBOUND_LISTENER)
    result: dict[int, InboundPolicy] = {}
    if listener is None:
        return result
    transports: dict[int, dict[str, bool]] = {}
    for chain in listener.filter_chains:
        port = chain.filter_chain_match.destination_port.value
        transport = chain.filter_chain_match.transport_protocol or "raw_buffer"
        if transport not in ("tls", "raw_buffer"):
            raise ConfigError(f"inbound port {port}: transport protocol {transport!r}")
        policy = result.get(port)
        if policy is None:  # a port's other chain has the same filters: compiled once
            policy = result[port] = InboundPolicy()
            _compile_chain(chain, port, policy, now, previous)
        if transport == "tls":
            policy.alpn = inbound_alpn(chain.transport_socket)
        transports.setdefault(port, {})[transport] = True
    for port, seen in transports.items():
        result[port].mode = inbound_mode(seen)
    return result


def _compile_chain(
    chain: Any,
    port: int,
    policy: InboundPolicy,
    now: float,
    previous: Mapping[int, InboundPolicy] | None,
) -> None:
    """``policy`` from the filters of one filter chain of ``port``."""
    tulle_metadata = chain.metadata.filter_metadata.get("tulle")
    if tulle_metadata is not None and "service" in tulle_metadata.fields:
        policy.service = tulle_metadata.fields["service"].string_value
    connection_filters = []
    for network_filter in chain.filters:
        kind = network_filter.typed_config.type_url
        if kind == TCP_PROXY_TYPE:
            policy.tcp = True
            continue
        if kind == NETWORK_RBAC_TYPE:
            network_config = network_rbac_pb2.RBAC()
            network_filter.typed_config.Unpack(network_config)
            where = f"inbound port {port} filter {network_filter.name!r}"
            connection_filters.append(compile_network_rbac(network_config, where))
            continue
        if kind != HCM_TYPE:
            raise ConfigError(
                f"inbound port {port}: network filter {network_filter.name!r} ({kind}) "
                "is not supported"
            )
        manager = hcm.HttpConnectionManager()
        network_filter.typed_config.Unpack(manager)
        policy.trusted_hops = manager.xff_num_trusted_hops
        filters = []
        for http_filter in manager.http_filters:
            if http_filter.name.startswith(RBAC_FILTER):
                config = rbac_pb2.RBAC()
                http_filter.typed_config.Unpack(config)
                filters.append(compile_rbac(config))
            elif http_filter.name == RATELIMIT_FILTER:
                spec = bucket(http_filter.typed_config, f"inbound_{port}")
                if spec is not None:
                    policy.bucket = _kept(previous, port, spec) or TokenBucket(spec, now)
        policy.rbac = tuple(filters)
    policy.connection_rbac = tuple(connection_filters)


def _kept(
    previous: Mapping[int, InboundPolicy] | None, port: int, spec: BucketSpec
) -> TokenBucket | None:
    """The bucket ``port`` had in ``previous`` if its limit is ``spec``."""
    policy = previous.get(port) if previous is not None else None
    if policy is not None and policy.bucket is not None and policy.bucket.spec == spec:
        return policy.bucket
    return None


def refusal(
    policy: InboundPolicy, request: Request, port: int, now: float
) -> errors.MeshError | None:
    """Why the app's port ``port`` refuses ``request`` (authorization, then the rate limit), or
    None when it may pass. Principal and namespace rules match ``request.peer_principal`` (the
    SPIFFE id the front took from the mTLS handshake; None over plain text matches none). Takes
    a token from the rate limit when it passes authorization."""
    if policy.rbac:
        denied = _authorized(policy.rbac, request, port, policy.trusted_hops)
        if denied is not None:
            return denied
    limit = policy.bucket
    if limit is not None and not limit.take(now):
        return errors.rate_limited(limit.spec.name, limit.spec.status)
    return None


def _authorized(
    rbac: tuple[RbacFilter, ...], request: Request, port: int, trusted_hops: int
) -> errors.MeshError | None:
    """The port's RBAC filters on ``request``: None when they allow it. (A port without any
    skips this: the peer's view of the request costs more than the rest of the check.) The
    connection's own facts (the address it came to, the SNI of its TLS handshake) are what
    the front put on the request."""
    path = request.path.partition("?")[0]
    headers = dict(reversed(request.headers))
    # AuthorizationPolicy methods and hosts arrive as Envoy's pseudo-headers (":method",
    # ":authority"), which HTTP/1.1 requests do not carry among their headers.
    headers[":method"] = request.method
    headers[":authority"] = request.authority
    headers[":path"] = request.path
    peer = Peer(
        headers, path, request.source_ip, port, request.local_ip, request.peer_principal,
        request.sni, trusted_hops,
    )  # fmt: skip
    return authorize(rbac, peer)


def connection_refusal(
    policy: InboundPolicy,
    port: int,
    source_ip: str,
    principal: str | None,
    destination_ip: str = "",
    sni: str = "",
) -> tuple[str, str] | None:
    """Why the app's port ``port`` refuses a connection (``(policy, reason)``: the DENY policy
    that matched, or ``none``), or None when it may pass: the port's network RBAC, once per
    connection, on the peer's address and the SPIFFE id its mTLS handshake proved (None over
    plain text: principal and namespace rules match nothing), the address it came to and the
    SNI its TLS client sent. A connection has no X-Forwarded-For: its client is its peer."""
    if not policy.connection_rbac:
        return None
    peer = Peer(NO_HEADERS, "", source_ip, port, destination_ip, principal, sni)
    return connection_denial(policy.connection_rbac, peer)


def path_normalization(listeners: Mapping[str, Any]) -> PathNormalization:
    """The mesh's path normalization, from the first HttpConnectionManager of ``listeners``
    (the control plane sets the same in each: ``normalize_path``, ``merge_slashes``,
    ``path_with_escaped_slashes_action``); BASE when none says."""
    for _, manager in connection_managers(listeners):
        if not manager.HasField("normalize_path"):
            return BASE
        decode = (
            manager.path_with_escaped_slashes_action
            == hcm.HttpConnectionManager.UNESCAPE_AND_FORWARD
        )
        return PathNormalization(
            normalize=manager.normalize_path.value,
            merge_slashes=manager.merge_slashes,
            decode_slashes=decode,
        )
    return BASE
