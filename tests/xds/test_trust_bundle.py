"""The trust bundle pushed over ADS (Secret ``ROOTCA``) as a workload takes it: the ADS client
ACKs it and hands its roots to the certificate keeper, NACKs a secret without roots; the keeper
renews at once when the pushed bundle is not the one it holds, and not otherwise."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf import any_pb2

from tulle.security.ca import CertificateAuthority
from tulle.security.keys import read_csr
from tulle.security.renewal import CertificateKeeper
from tulle.security.spiffe import SpiffeId
from tulle.xds import types
from tulle.xds.client import XdsClient

NODE = "sidecar~127.0.0.1~a-0.default~default.svc.cluster.local"


def secret_response(bundle: bytes, version: str) -> discovery_pb2.DiscoveryResponse:
    context = common_pb2.CertificateValidationContext(
        trusted_ca=base_pb2.DataSource(inline_bytes=bundle)
    )
    secret = secret_pb2.Secret(name="ROOTCA", validation_context=context)
    packed = any_pb2.Any()
    packed.Pack(secret)
    return discovery_pb2.DiscoveryResponse(
        version_info=version, type_url=types.SECRET, resources=[packed], nonce="n" + version
    )


def test_the_ads_client_hands_the_bundle_on_and_nacks_a_secret_without_roots() -> None:
    seen: list[bytes] = []
    accepted: list[object] = []
    client = XdsClient("127.0.0.1:1", NODE, lambda resources, version: accepted.append(version))
    client.on_trust_bundle = seen.append
    client.handle(secret_response(b"-----BEGIN CERTIFICATE-----...", "1"))
    assert seen == [b"-----BEGIN CERTIFICATE-----..."]
    assert client.versions[types.SECRET] == "1"
    assert accepted == []  # not config for the engine
    client.handle(secret_response(b"", "2"))
    assert seen == [b"-----BEGIN CERTIFICATE-----..."]
    assert client.versions[types.SECRET] == "1"  # the last good bundle stays
    assert client.last_nack[types.SECRET] == (
        "secret ROOTCA has no validation_context.trusted_ca roots"
    )


def test_the_keeper_renews_at_once_only_when_the_pushed_bundle_is_new(tmp_path: Path) -> None:
    ca = CertificateAuthority.load_or_create(tmp_path / "ca", "cluster.local")
    identity = SpiffeId("cluster.local", "default", "a")
    calls: list[bytes] = []

    async def sign(request: bytes) -> bytes:
        csr = json.loads(request)["csr"].encode()
        read_csr(csr)
        calls.append(csr)
        issued = ca.issue(csr, identity, timedelta(hours=1))
        return json.dumps(
            {"certChain": issued.chain_pem.decode(), "trustBundle": ca.trust_bundle_pem().decode()}
        ).encode()

    async def main() -> None:
        keeper = CertificateKeeper(sign, identity)
        task = asyncio.create_task(keeper.run())
        try:
            await asyncio.wait_for(keeper.ready.wait(), 30)
            keeper.bundle_changed(ca.trust_bundle_pem())  # the bundle it holds: nothing to do
            assert keeper._early is None
            ca.stage_new_root()
            keeper.bundle_changed(ca.trust_bundle_pem())
            async with asyncio.timeout(30):
                while keeper.renewals < 1:
                    await asyncio.sleep(0.05)
            assert keeper.current is not None
            assert keeper.current.bundle_pem == ca.trust_bundle_pem()
            assert len(calls) == 2  # the first certificate, then the renewal the push asked for
        finally:
            task.cancel()

    asyncio.run(main())
