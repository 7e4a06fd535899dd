"""The soak's load: a fixed-rate, open-loop HTTP/1.1 client. Request ``n`` is due at
``start + n / rate`` whatever happened to the ones before (a slow answer never delays the next
request, so an outage shows as failures and latency instead of as fewer requests: no
coordinated omission). Each request's outcome is kept: when it was due, when it ended, its
status and, for a failure, the reason (the mesh's ``x-tulle-error``, else what the frontend's
page says failed, else the client's own error).

It runs as a process of its own (``python -m benchmarks.soak.load``), so the soak's other work
does not delay it, and writes its outcomes as JSON lines when done. Times are
``time.monotonic()``, the same clock in every process, so the soak lines them up with its
disruption windows."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import uvloop

from tulle.local.state import StateDir

TIMEOUT = 10.0  # seconds a request may take before it counts as failed ("client timeout")
MAX_CONNECTIONS = 1000  # more would be the load generator's failure, not the mesh's
IDLE_EXPIRY = 5.0  # seconds an unused keep-alive connection is kept (httpx's default)
ADDRESS = re.compile(r"\d+\.\d+\.\d+\.\d+:\d+")  # reasons are counted without them


@dataclass(slots=True)
class Outcome:
    """One request: due and ended (monotonic seconds), status (0: no response) and reason."""

    due: float
    done: float
    status: int
    reason: str = ""

    @property
    def latency(self) -> float:
        """Seconds from when the request was due (not sent) to its end."""
        return self.done - self.due


class NoResponseError(Exception):
    """The connection failed or closed before a whole response came back."""


class Target:
    """Where the load goes: the frontend's address from the mesh's ``state.json``, read again
    after a refused connection (a restarted replica gets new ports)."""

    def __init__(self, state: StateDir, replica: str) -> None:
        self.state = state
        self.replica = replica
        self.host, self.port = "", 0
        self.read_at = 0.0
        self.refresh(force=True)

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.read_at < 0.5:
            return
        self.read_at = now
        mesh = self.state.read()
        if mesh is None:
            return
        for replica in mesh.replicas:
            if replica.replica == self.replica and replica.address:
                host, _, port = replica.address.rpartition(":")
                self.host, self.port = host, int(port)


class Connection:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.reusable = True
        self.idle_since = 0.0

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer)

    async def get(self, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        """Send ``request``; its status, headers (names lowercased) and body."""
        self.writer.write(request)
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as error:
            raise NoResponseError(f"connection closed before a response ({_what(error)})") from None
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name:
                headers[name.strip().lower()] = value.strip()
        try:
            if headers.get(b"transfer-encoding", b"").lower() == b"chunked":
                body = await self._chunked()
            else:
                body = await self.reader.readexactly(int(headers.get(b"content-length", b"0")))
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as error:
            raise NoResponseError(f"connection closed mid-response ({_what(error)})") from None
        if headers.get(b"connection", b"").lower() == b"close":
            self.reusable = False
        return status, headers, body

    async def _chunked(self) -> bytes:
        body = b""
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":
                    pass
                return body
            body += (await self.reader.readexactly(size + 2))[:-2]

    def close(self) -> None:
        self.writer.close()


def _what(error: BaseException) -> str:
    if isinstance(error, asyncio.IncompleteReadError):
        return "EOF"
    return type(error).__name__ if not str(error) else f"{type(error).__name__}: {error}"


def reason_of(status: int, headers: dict[bytes, bytes], body: bytes) -> str:
    """Why a request failed: the mesh's own reason, else the frontend page's failing parts."""
    mesh = headers.get(b"x-tulle-error")
    if mesh:
        return mesh.decode(errors="replace")
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        page: dict[str, Any] = json.loads(body)
        parts = [f"{name}: {part.get('status')} {part.get('reason', '')}".rstrip()
                 for name, part in sorted(page.items())
                 if isinstance(part, dict) and part.get("status") != 200]  # fmt: skip
        if parts:
            return "; ".join(parts)
    return f"HTTP {status}"


class Load:
    """Sends ``rate`` requests a second for ``seconds`` and keeps every outcome."""

    def __init__(self, target: Target, rate: float, seconds: float) -> None:
        self.target = target
        self.rate = rate
        self.seconds = seconds
        self.idle: list[Connection] = []
        self.open = 0
        self.outcomes: list[Outcome] = []
        self.request = b"GET / HTTP/1.1\r\nHost: frontend:8080\r\nUser-Agent: tulle-soak\r\n\r\n"

    async def run(self, began: float) -> list[Outcome]:
        """Send on schedule from ``began`` (monotonic); return once every request ended."""
        tasks: set[asyncio.Task[None]] = set()
        total = int(self.rate * self.seconds)
        for index in range(total):
            due = began + index / self.rate
            pause = due - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)
            task = asyncio.create_task(self.one(due))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while tasks:
            await asyncio.gather(*list(tasks))
        for connection in self.idle:
            connection.close()
        return self.outcomes

    async def one(self, due: float) -> None:
        status, reason = 0, ""
        try:
            async with asyncio.timeout(TIMEOUT):
                status, reason = await self._send()
        except TimeoutError:
            reason = f"client timeout ({TIMEOUT:g} s)"
        except OSError as error:
            reason = f"client: {_what(error)}"
            self.target.refresh()
        except NoResponseError as error:
            reason = f"client: {error}"
        self.outcomes.append(Outcome(due, time.monotonic(), status, ADDRESS.sub("ADDR", reason)))

    async def _send(self) -> tuple[int, str]:
        # The most recently used connection first; those unused for IDLE_EXPIRY are closed, so
        # the open connections follow the requests in flight (as a pooled client's do).
        expired = time.monotonic() - IDLE_EXPIRY
        while self.idle and self.idle[0].idle_since < expired:
            self.idle.pop(0).close()
        if self.idle:
            connection = self.idle.pop()
        elif self.open >= MAX_CONNECTIONS:
            return 0, f"load generator: {MAX_CONNECTIONS} connections busy"
        else:
            connection = await Connection.open(self.target.host, self.target.port)
        self.open += 1
        try:
            status, headers, body = await connection.get(self.request)
        except BaseException:
            connection.reusable = False
            raise
        finally:
            self.open -= 1
            if not connection.reusable:
                connection.close()
        if connection.reusable:
            connection.idle_since = time.monotonic()
            self.idle.append(connection)
        if status == 200:
            return status, ""
        return status, reason_of(status, headers, body)


def write(outcomes: list[Outcome], path: Path) -> None:
    with open(path, "w") as out:
        for outcome in outcomes:
            out.write(json.dumps(asdict(outcome)) + "\n")


def read(path: Path) -> list[Outcome]:
    with open(path) as lines:
        return [Outcome(**json.loads(line)) for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description="The soak's fixed-rate open-loop load.")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--replica", default="frontend-0")
    parser.add_argument("--rate", type=float, required=True)
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--start", type=float, required=True, help="monotonic time to begin")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    load = Load(Target(StateDir(args.state_dir), args.replica), args.rate, args.seconds)
    write(uvloop.run(load.run(args.start)), args.out)


if __name__ == "__main__":
    main()
