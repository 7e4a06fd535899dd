"""What the TLS layer's tests share (tests/transport/test_tls_*.py): a scenario runner on a
fresh uvloop or asyncio loop that closes its servers however it ends, a recording inner protocol,
a TlsProtocol / TlsOrPlain server on loopback, peer checks by SPIFFE id, and the curl client.
The certificates are the ``material`` fixture (tests/transport/conftest.py)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from tests.tls_material import SERVER_DNS, Material, spiffe, uri_sans
from tulle.transport.tls import TlsProtocol
from tulle.transport.tls_errors import PeerCert
from tulle.transport.tls_open import TlsOrPlain

FRONTEND = spiffe("frontend")
BACKEND = spiffe("backend")
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": uvloop.new_event_loop,
    "asyncio": asyncio.new_event_loop,
}


def run(scenario: Coroutine[Any, Any, None], loop: str = "uvloop", timeout: float = 30) -> None:
    """Run ``scenario`` on a fresh loop (uvloop, as the sidecar, unless told otherwise); the
    servers it started are closed however it ends."""

    async def guarded() -> None:
        try:
            await asyncio.wait_for(scenario, timeout)
        finally:
            for close in reversed(CLEANUP):
                close()
            CLEANUP.clear()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(guarded())


CLEANUP: list[Callable[[], None]] = []
"""What to close when a scenario ends (servers, their connections), even when it fails."""


class Log:
    """Things that happened, and a way to wait for the next."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.changed = asyncio.Event()

    def append(self, item: Any) -> None:
        self.items.append(item)
        self.changed.set()

    async def until(self, condition: Callable[[], object], timeout: float = 10) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


class Recorder(asyncio.Protocol):
    """An inner protocol that records what it is told; echoes when asked to."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.transport: asyncio.Transport | None = None
        self.data = bytearray()
        self.calls = 0
        self.first_peercert: PeerCert | None = None
        self.eofs = 0
        self.lost: list[Exception | None] = []
        self.paused = 0
        self.resumed = 0
        self.events = Log()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if self.calls == 0:
            self.first_peercert = self.transport.get_extra_info("peercert")
        self.calls += 1
        self.data += data
        if self.echo:
            self.transport.write(data)
        self.events.append("data")

    def eof_received(self) -> bool | None:
        self.eofs += 1
        self.events.append("eof")
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)
        self.events.append("lost")

    def pause_writing(self) -> None:
        self.paused += 1
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.resumed += 1
        self.events.append("resume")

    async def until(self, condition: Callable[[], object], timeout: float = 10) -> None:
        await self.events.until(condition, timeout)


class TlsServer:
    """A TlsProtocol server on 127.0.0.1 whose inner protocols and refusals are kept."""

    def __init__(self, server: asyncio.Server, served: list[Any], refused: Log) -> None:
        self.server = server
        self.port: int = server.sockets[0].getsockname()[1]
        self.served = served
        self.refused = refused

    async def close(self) -> None:
        self.server.close()
        for inner in self.served:
            if inner.transport is not None:
                inner.transport.abort()
        await self.server.wait_closed()


async def serve(
    inner: Callable[[], asyncio.Protocol],
    context: ssl.SSLContext | Callable[[], ssl.SSLContext],
    mode: str | None = None,
    **options: Any,
) -> TlsServer:
    """Serve ``inner`` over TLS (``TlsProtocol.server``, or ``TlsOrPlain`` with ``mode``)."""
    provider = context if callable(context) else (lambda: context)
    served: list[Any] = []
    refused = Log()

    def factory() -> asyncio.Protocol:
        protocol = inner()
        served.append(protocol)
        return protocol

    def on_refused(peer: Any, reason: str) -> None:
        refused.append((peer, reason))

    def make() -> asyncio.Protocol:
        if mode is None:
            return TlsProtocol.server(provider, factory, on_refused, **options)
        return TlsOrPlain(mode, provider, factory, on_refused, **options)  # type: ignore[arg-type]

    server = await asyncio.get_running_loop().create_server(make, "127.0.0.1", 0)
    tls_server = TlsServer(server, served, refused)
    CLEANUP.append(server.close)
    CLEANUP.append(lambda: abort_all(served))
    return tls_server


def abort_all(served: list[Any]) -> None:
    for inner in served:
        if inner.transport is not None:
            inner.transport.abort()


def echo() -> Recorder:
    return Recorder(echo=True)


def identity_is(*allowed: str) -> Callable[[PeerCert | None, bytes | None], None]:
    """A verify_peer for tests: the peer's SPIFFE id must be one of ``allowed`` (what
    tulle.security does for the mesh)."""

    def verify(peercert: PeerCert | None, der: bytes | None) -> None:
        uris = uri_sans(peercert)
        if not any(uri in allowed for uri in uris):
            raise ValueError(
                f"upstream peer identity {uris[0] if uris else 'none'} is not one of {list(allowed)}"
            )

    return verify


def in_trust_domain(peercert: PeerCert | None, der: bytes | None) -> None:
    uris = uri_sans(peercert)
    if not uris or not uris[0].startswith("spiffe://cluster.local/"):
        raise ValueError(f"peer {uris[0] if uris else 'without SPIFFE id'} is not in cluster.local")


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes):
    writer.write(data)
    return await asyncio.wait_for(reader.readexactly(len(data)), 10)


def need(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        pytest.skip(f"{command} is not installed")
    return path


async def curl(port: int, material: Material, *extra: str) -> tuple[int, bytes, bytes]:
    # The server's leaf carries a DNS SAN (SERVER_DNS) beside its SPIFFE id, and --resolve
    # points that name at 127.0.0.1: curl checks the chain against --cacert *and* the host name,
    # with neither --insecure nor a certificate made for an IP address.
    process = await asyncio.create_subprocess_exec(
        need("curl"),
        "-sS",
        "--max-time",
        "10",
        "--cacert",
        str(material.root.path),
        "--resolve",
        f"{SERVER_DNS}:{port}:127.0.0.1",
        *extra,
        f"https://{SERVER_DNS}:{port}/who",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 15)
    assert process.returncode is not None
    return process.returncode, out, err
