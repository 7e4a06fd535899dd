"""An HTTP/2-only backend (cleartext, prior knowledge; the h2 library): answers every request
with 200, ``x-backend: <name>`` and ``x-protocol: HTTP/2``. An HTTP/1.1 request gets no answer
(h2 refuses its bytes and the connection closes), so a call that reaches it went as HTTP/2: the
h2UpgradePolicy scenario's destination. Takes ``--name`` (and ``--fail-rate``, ``--delay``,
ignored: the parity backends' options); prints ``READY <port>``; stops on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions


class H2ServerProtocol(asyncio.Protocol):
    """The server side of one cleartext HTTP/2 connection (an h2 connection, ``conn``, with
    str headers): sends its preface (SETTINGS) once connected; ``data_received`` is the
    subclass's."""

    def __init__(self) -> None:
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.conn.initiate_connection()
        self.transport.write(self.conn.data_to_send())


class Server(H2ServerProtocol):
    """Answers every request 200 ``ok``, naming the backend and the protocol."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.transport.close()  # not HTTP/2
            return
        for event in events:
            if isinstance(event, h2.events.StreamEnded):
                headers = [(":status", "200"), ("x-backend", self.name),
                           ("x-protocol", "HTTP/2"), ("content-length", "2")]  # fmt: skip
                self.conn.send_headers(event.stream_id, headers)
                self.conn.send_data(event.stream_id, b"ok", end_stream=True)
        self.transport.write(self.conn.data_to_send())


async def serve(name: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Server(name), "127.0.0.1", 0)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--delay", type=float, default=0.0)
    asyncio.run(serve(parser.parse_args().name))


if __name__ == "__main__":
    main()
