"""RSS per idle mTLS connection: Tulle's TLS layer (``tulle.transport.tls``, memory BIOs on a
plain transport) against asyncio's own ``ssl=`` transport, under uvloop and under the standard
loop, with a plain-TCP baseline, measured in one run.

    python -m benchmarks.tls_memory [--connections 1000] [--kinds tulle uvloop-ssl ...]

Two processes per kind: a server (an echo protocol) and a client that opens N mTLS connections
(EC P-256 certificates with SPIFFE ids, TLS 1.3, client certificates required), then leaves
them idle. Each process reports its RSS after a warm-up (20 connections opened and closed), with
the N connections idle after the handshake, then idle again after every connection has echoed
1 KiB (a small request), then 64 KiB (a large body): what stays allocated once a connection has
carried data. The figure is RSS added per connection, in KiB. ``tulle-0tickets`` is Tulle's
layer with a server context that sends no TLS 1.3 session tickets (``num_tickets = 0``): a client
that reads tickets keeps OpenSSL's 16 KiB handshake-message buffer for good.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from tests.tls_material import make_material
from tulle.transport.tls import TlsProtocol
from tulle.transport.tls_open import open_tls_connection

KINDS = ("plain", "tulle", "tulle-0tickets", "uvloop-ssl", "tulle-asyncio", "asyncio-ssl")
"""What the server and the client run: plain TCP (uvloop), Tulle's TLS under uvloop (with the
server's default of two session tickets, and with none), uvloop's ``ssl=`` transport, Tulle's TLS
under the standard loop, asyncio's ``ssl=`` transport."""
WARM_UP = 20
PHASES = ("idle", "1 KiB", "64 KiB")
"""The states measured: after the handshake, after echoing 1 KiB, after echoing 64 KiB."""
ECHO = {"1 KiB": 1024, "64 KiB": 64 * 1024}
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    """This process's resident set, in bytes (after a collection, so that garbage does not
    count)."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


def uses_uvloop(kind: str) -> bool:
    return kind in ("plain", "tulle", "uvloop-ssl")


def release_buffers_mode(context: ssl.SSLContext) -> bool | None:
    """Whether OpenSSL's SSL_MODE_RELEASE_BUFFERS is set on ``context`` (read through
    SSL_CTX_ctrl; the SSL_CTX pointer follows the object header in CPython's PySSLContext);
    None when libssl cannot be found."""
    with open("/proc/self/maps") as maps:
        path = next((line.split()[-1] for line in maps if "libssl.so" in line), None)
    if path is None:
        return None
    libssl = ctypes.CDLL(path)
    libssl.SSL_CTX_ctrl.restype = ctypes.c_long
    libssl.SSL_CTX_ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    ctx = ctypes.c_void_p.from_address(id(context) + object.__basicsize__).value
    ssl_ctrl_mode, ssl_mode_release_buffers = 33, 0x10
    return bool(libssl.SSL_CTX_ctrl(ctx, ssl_ctrl_mode, 0, None) & ssl_mode_release_buffers)


# --- the server -------------------------------------------------------------------------------


class Echo(asyncio.Protocol):
    """Answers what it reads; counts the connections that completed their handshake."""

    open = 0
    changed: asyncio.Event | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        Echo.open += 1
        if Echo.changed is not None:
            Echo.changed.set()

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        Echo.open -= 1
        if Echo.changed is not None:
            Echo.changed.set()


async def serve(kind: str, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    context = server_context(directory)  # the files the runner made
    if kind == "tulle-0tickets":
        context.num_tickets = 0
    Echo.changed = asyncio.Event()
    if kind == "plain":
        server = await loop.create_server(Echo, "127.0.0.1", 0, backlog=4096)
    elif kind.startswith("tulle"):
        server = await loop.create_server(
            lambda: TlsProtocol.server(lambda: context, Echo), "127.0.0.1", 0, backlog=4096
        )
    else:
        server = await loop.create_server(Echo, "127.0.0.1", 0, ssl=context, backlog=4096)
    print("port", server.sockets[0].getsockname()[1], flush=True)
    print("release-buffers", release_buffers_mode(context), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "wait":  # until exactly N connections are open, then the RSS
            wanted = int(line[1])
            while Echo.open != wanted:
                Echo.changed.clear()
                await asyncio.wait_for(Echo.changed.wait(), 60)
            print("rss", rss(), flush=True)
    server.close()


def server_context(directory: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(directory / "backend.pem", directory / "backend-key.pem")
    context.load_verify_locations(cafile=directory / "mesh-ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(directory: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=directory / "mesh-ca.pem")
    context.load_cert_chain(directory / "frontend.pem", directory / "frontend-key.pem")
    return context


# --- the client -------------------------------------------------------------------------------


class Reader(asyncio.Protocol):
    """Collects what the server echoes."""

    def __init__(self) -> None:
        self.received = 0
        self.wanted = 0
        self.done: asyncio.Future[None] | None = None
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.done is not None and self.received >= self.wanted and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def client(kind: str, port: int, count: int, directory: Path) -> None:
    loop = asyncio.get_running_loop()
    context = client_context(directory)

    async def connect() -> Reader:
        if kind == "plain":
            return (await loop.create_connection(Reader, "127.0.0.1", port))[1]
        if kind.startswith("tulle"):
            return await open_tls_connection(loop, Reader, "127.0.0.1", port, context)
        return (await loop.create_connection(Reader, "127.0.0.1", port, ssl=context))[1]

    async def open_many(n: int) -> list[Reader]:
        opened: list[Reader] = []
        for start in range(0, n, 50):
            opened += await asyncio.gather(*(connect() for _ in range(min(50, n - start))))
        return opened

    async def echo(readers: list[Reader], size: int) -> None:
        payload = b"x" * size
        for start in range(0, len(readers), 50):
            batch = readers[start : start + 50]
            for reader in batch:
                reader.received, reader.wanted = 0, size
                reader.done = loop.create_future()
                reader.transport.write(payload)  # type: ignore[attr-defined]
            await asyncio.gather(*(reader.done for reader in batch if reader.done is not None))

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    warm = await open_many(WARM_UP)
    await echo(warm, ECHO["64 KiB"])
    for each in warm:
        each.transport.close()
    await asyncio.gather(*(each.closed for each in warm))
    del warm, each
    print("rss", rss(), flush=True)
    await reader.readline()
    readers = await open_many(count)
    print("rss", rss(), flush=True)
    for phase in PHASES[1:]:
        await reader.readline()
        await echo(readers, ECHO[phase])
        print("rss", rss(), flush=True)
    await reader.readline()


# --- the runner -------------------------------------------------------------------------------


def start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.tls_memory", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def ask(process: subprocess.Popen[str], command: str | None, key: str) -> str:
    assert process.stdin is not None
    assert process.stdout is not None
    if command is not None:
        process.stdin.write(command + "\n")
        process.stdin.flush()
    while True:
        line = process.stdout.readline().split()
        if not line:
            raise RuntimeError(f"{process.args!r} ended without {key}")
        if line[0] == key:
            return line[1]


def measure(kind: str, count: int, directory: Path) -> dict[str, float]:
    server = start(["serve", kind, str(directory)])
    port = ask(server, None, "port")
    release = ask(server, None, "release-buffers")
    client_process = start(["client", kind, port, str(count), str(directory)])
    try:
        client_base = int(ask(client_process, None, "rss"))
        server_base = int(ask(server, "wait 0", "rss"))
        figures: dict[str, float] = {"release_buffers": float(release == "True")}
        for phase in PHASES:
            client_rss = int(ask(client_process, "next", "rss"))
            server_rss = int(ask(server, f"wait {count}", "rss"))
            figures[f"server {phase}"] = (server_rss - server_base) / 1024 / count
            figures[f"client {phase}"] = (client_rss - client_base) / 1024 / count
    finally:
        for process in (client_process, server):
            assert process.stdin is not None
            process.stdin.close()
            process.wait(60)
    return figures


def run(kind: str, coroutine_args: list[str]) -> None:
    runner: Callable[[Coroutine[Any, Any, None]], None] = asyncio.run
    if uses_uvloop(kind):
        import uvloop

        runner = uvloop.run
    if coroutine_args[0] == "serve":
        runner(serve(kind, Path(coroutine_args[1])))
    else:
        port, count, directory = coroutine_args[1:]
        runner(client(kind, int(port), int(count), Path(directory)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "client"):
        run(sys.argv[2], [sys.argv[1], *sys.argv[3:]])
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        directory = Path(work)
        make_material(directory)
        results = {kind: measure(kind, args.connections, directory) for kind in args.kinds}
    columns = [f"{side} {phase}" for side in ("server", "client") for phase in PHASES]
    from importlib.metadata import version

    print(
        f"\nRSS added per connection with {args.connections} mTLS connections (KiB); Python "
        f"{sys.version.split()[0]}, {ssl.OPENSSL_VERSION}, uvloop {version('uvloop')}"
    )
    print(f"{'kind':<16}" + "".join(f"{column:>15}" for column in columns))
    for kind, figures in results.items():
        print(f"{kind:<16}" + "".join(f"{figures[column]:>15.1f}" for column in columns))
    modes = {figures["release_buffers"] for kind, figures in results.items() if kind != "plain"}
    print(f"SSL_MODE_RELEASE_BUFFERS set by CPython on its contexts: {modes == {1.0}}")


if __name__ == "__main__":
    main()
