"""One fuzz input's client connection to a front end, shared by the HTTP/1.1 and HTTP/2
targets: the client's bytes are read in the pieces the input chose (nothing while the front end
has paused reading, as a real transport would), the stand-in engine takes a step and the loop a
few turns after each, a drain comes half-way if the input asks (through ``InFlight.drain``, as
the proxy's does), and the connection ends in one of four ways: the engine settles then the
client closes (0); the client leaves first (1); the client half-closes first (2); the engine
settles, then the client half-closes (3). In 0 and 3 the client stays until every answer is
given."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from fuzz.support.checks import calling, check
from fuzz.support.engine import Engine
from fuzz.support.loop import turns
from fuzz.support.transport import FakeTransport
from tulle.proxy.in_flight import InFlight

STEP_TURNS = 3  # loop turns after each read and engine step


@dataclass
class Connection:
    """A front end (``name`` says which, in failures; ``prefix`` names its checks), its
    transport and in-flight record, the stand-in engine, and what the input chose: the client's
    reads, a drain, the ending."""

    name: str
    prefix: str
    front: asyncio.Protocol
    engine: Engine
    in_flight: InFlight
    transport: FakeTransport
    pieces: list[bytes]
    draining: bool
    ending: int

    @property
    def client_stays(self) -> bool:
        """The client keeps the connection until the engine has answered everything."""
        return self.ending in (0, 3)

    async def drive(self) -> None:
        """The whole connection: made, fed, ended; then nothing may be left running."""
        with calling(f"{self.name}.connection_made"):
            self.front.connection_made(self.transport)
        for index, piece in enumerate(self.pieces):
            for _ in range(4):  # a paused front end reads nothing until it resumes
                if not self.transport.paused:
                    break
                await self.step()
            if self.transport.paused or self.transport.closing:
                break
            with calling(f"{self.name}.data_received"):
                self.front.data_received(piece)
            if self.draining and index == len(self.pieces) // 2:
                with calling(f"InFlight.drain ({self.name}.drain)"):
                    self.in_flight.drain()
            await self.step()
        await self.end()
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        check(not left, f"{self.prefix}.tasks-left", lambda: str(left))

    async def step(self) -> None:
        """The engine's next step, then a few turns of the loop."""
        with calling("engine step (the front end's answer callbacks)"):
            self.engine.step()
        await turns(STEP_TURNS)

    async def end(self) -> None:
        """The connection's end, in the way the input chose."""
        if self.ending == 1 and not self.transport.lost:
            self.lose()
        if self.ending == 2 and not self.transport.closing:
            self.eof()
        await self.settle()
        if self.ending == 3 and not self.transport.closing:
            self.eof()
        if not self.transport.lost:
            self.lose()
        await self.settle()

    def lose(self) -> None:
        """The connection is gone."""
        with calling(f"{self.name}.connection_lost"):
            self.transport.lose()

    def eof(self) -> None:
        """The client half-closes: unless the front end keeps its half open, the transport
        closes (as asyncio's does)."""
        with calling(f"{self.name}.eof_received"):
            keep_open = self.front.eof_received()
        if not keep_open:
            self.lose()

    async def settle(self) -> None:
        """Answer and finish everything, until answers lead to no new request."""
        for _ in range(8):
            count = len(self.engine.dispatched)
            with calling("engine settle (the front end's answer callbacks)"):
                self.engine.settle()
            await turns(STEP_TURNS)
            if len(self.engine.dispatched) == count:
                break
