"""The trust bundle the control plane pushes, for ``tulle agent``: an ADS stream of its own that
subscribes only to the Secret ``ROOTCA``.

At each step of a root rotation the control plane pushes the mesh's bundle to every node over
ADS. The sidecar and the library take it on their config stream
(:class:`tulle.xds.client.XdsClient`); a proxyless app's config stream is grpcio's own, which
the agent cannot see into, so the agent opens one beside it, as the same node (its replica's
token proves it), asking for nothing but that secret. Each bundle it gets is ACKed and handed
on (the agent writes ``root-cert.pem`` at once and renews within seconds); a secret without
roots is NACKed with the reason and changes nothing. The stream is re-opened with backoff when
it breaks; while the control plane is away the files stay as they are."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
from collections.abc import Callable

from envoy.extensions.transport_sockets.tls.v3 import secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import DecodeError

from tulle.xds import types
from tulle.xds.client import ADS_METHOD
from tulle.xds.grpc_stream import GrpcStream, GrpcStreamError

log = logging.getLogger(__name__)


def _request(node_id: str, version: str = "", nonce: str = "", error: str = "") -> bytes:
    message = discovery_pb2.DiscoveryRequest(
        type_url=types.SECRET,
        resource_names=[types.TRUST_BUNDLE_SECRET],
        version_info=version,
        response_nonce=nonce,
    )
    message.node.id = node_id
    if error:
        message.error_detail.code = 3  # INVALID_ARGUMENT
        message.error_detail.message = error
    data: bytes = message.SerializeToString()
    return data


def bundle_of(response: discovery_pb2.DiscoveryResponse) -> bytes | None:
    """The roots of the ``ROOTCA`` secret in ``response`` (None: it has none)."""
    for packed in response.resources:
        secret = secret_pb2.Secret()
        if packed.Unpack(secret) and secret.name == types.TRUST_BUNDLE_SECRET:
            roots: bytes = secret.validation_context.trusted_ca.inline_bytes
            return roots or None
    return None


class TrustBundleWatch:
    """Follows the ``ROOTCA`` secret of node ``node_id`` on the secure xDS port at ``address``.

    ``tls`` gives the context to verify the control plane with (read at each connect: it follows
    the agent's last bundle), ``credential`` the bootstrap token, ``on_bundle`` gets each
    bundle pushed (on the event loop)."""

    def __init__(
        self,
        address: str,
        node_id: str,
        tls: Callable[[], ssl.SSLContext],
        credential: Callable[[], str],
        on_bundle: Callable[[bytes], None],
    ) -> None:
        self.address = address
        self.node_id = node_id
        self.tls = tls
        self.credential = credential
        self.on_bundle = on_bundle
        self.version = ""
        self.received = 0  # bundles taken
        self.last_error = ""

    async def _stream(self) -> None:
        """One stream, until it ends (raises why)."""
        metadata = [("authorization", f"Bearer {self.credential()}")]
        call = await GrpcStream.open(self.address, ADS_METHOD, tls=self.tls(), metadata=metadata)
        try:
            call.send(_request(self.node_id, self.version))
            while True:
                try:
                    response = discovery_pb2.DiscoveryResponse.FromString(await call.receive())
                except DecodeError as error:
                    raise GrpcStreamError("INTERNAL", f"bad DiscoveryResponse: {error}") from None
                bundle = bundle_of(response)
                if response.type_url != types.SECRET or bundle is None:
                    reason = f"secret {types.TRUST_BUNDLE_SECRET} has no trusted_ca roots"
                    log.warning("rejecting %s: %s", response.type_url, reason)
                    call.send(_request(self.node_id, self.version, response.nonce, reason))
                    continue
                self.version = response.version_info
                call.send(_request(self.node_id, self.version, response.nonce))
                self.received += 1
                self.on_bundle(bundle)
        finally:
            call.close()

    async def run(self) -> None:
        """Keep the stream open until cancelled, re-opening it with backoff (0.1 s to 5 s)."""
        backoff = 0.1
        while True:
            before = self.received
            try:
                await self._stream()
            except Exception as error:  # any reason the stream ended: logged, then re-opened
                if str(error) != self.last_error:
                    log.info("trust bundle stream to %s ended: %s", self.address, error)
                self.last_error = str(error)
            if self.received > before:
                backoff = 0.1  # the stream worked: start the backoff over
            await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
            backoff = min(backoff * 2, 5.0)
