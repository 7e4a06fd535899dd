"""The engine's stand-in for the front-end targets: a dispatcher (the front ends' ``Dispatcher``
signature) that answers each request as the fuzz input says: at once (during the dispatch),
later (when the harness says), never (until the end), with a body streamed in pieces, with a
body cut part-way (UpstreamError), or after an informational 103. Each answer is tagged
(``x-fuzz-answer: <n>``, body ``answer <n>``), so the harness can find it in what the front end
wrote; the stand-in keeps each request's story (answered, cancelled) for the checks."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from fuzz.support.checks import CheckError, check
from tulle.engine.message import Request, Response, UpstreamError
from tulle.proxy.recording import Destination

ANSWER_HEADER = "x-fuzz-answer"


class Behaviour(enum.IntEnum):
    """How the stand-in answers one request."""

    AT_ONCE = 0
    LATER = 1
    NEVER = 2  # until the harness settles everything at the end
    STREAMED = 3
    CUT = 4  # a streamed body that fails part-way
    INTERIM = 5  # a 103 Early Hints, then an answer at once


@dataclass
class Dispatched:
    """One request the front end dispatched, and what became of it."""

    index: int
    request: Request
    behaviour: Behaviour
    done: Callable[[Response], None]
    answered: bool = False
    cancelled: bool = False
    pieces_sent: int = 0  # of a streamed body: its two halves, then its end
    chunks: asyncio.Queue[bytes | None] = field(default_factory=asyncio.Queue)

    @property
    def body(self) -> bytes:
        """The body this request's answer carries."""
        return b"answer %d" % self.index

    def cancel(self) -> None:
        """The front end's cancel (the client went away): no answer may follow."""
        check(not self.answered, "dispatch.cancel-after-answer", f"request {self.index}")
        self.cancelled = True


class Engine:
    """Answers requests as ``behaviours`` says (one per dispatched request, by index)."""

    def __init__(self, behaviours: Callable[[int], Behaviour], trailers: bool = False) -> None:
        self.behaviours = behaviours
        self.trailers = trailers  # gRPC-style answers, for the HTTP/2 front end
        self.dispatched: list[Dispatched] = []
        # Checks of each request dispatched; a violation is kept for the harness to raise (the
        # front end may catch what its dispatcher raises, as a bug in the engine).
        self.inspect: Callable[[Request], None] = lambda request: None
        self.violations: list[CheckError] = []

    def dispatch(
        self, request: Request, destination: Destination, done: Callable[[Response], None]
    ) -> Callable[[], None]:
        """The front end's ``Dispatcher``."""
        try:
            self.inspect(request)
        except CheckError as violation:
            self.violations.append(violation)
        item = Dispatched(
            len(self.dispatched), request, self.behaviours(len(self.dispatched)), done
        )
        self.dispatched.append(item)
        if item.behaviour == Behaviour.INTERIM and request.interim is not None:
            request.interim(103, "Early Hints", [("link", "</a.css>; rel=preload")])
        if item.behaviour in (Behaviour.AT_ONCE, Behaviour.INTERIM):
            self._answer(item)
        elif item.behaviour in (Behaviour.STREAMED, Behaviour.CUT):
            self._answer(item)  # the head now, the body as the harness lets it through
        return item.cancel

    def _answer(self, item: Dispatched) -> None:
        check(not item.cancelled, "dispatch.answer-after-cancel", f"request {item.index}")
        item.answered = True
        headers = [("content-type", "text/plain"), (ANSWER_HEADER, str(item.index))]
        trailers = [("grpc-status", "0")] if self.trailers else None
        if item.behaviour in (Behaviour.STREAMED, Behaviour.CUT):
            response = Response(200, headers, self._pieces(item), trailers=trailers)
        else:
            response = Response(200, headers, item.body, trailers=trailers)
        item.done(response)

    async def _pieces(self, item: Dispatched) -> AsyncIterator[bytes]:
        while True:
            chunk = await item.chunks.get()
            if chunk is None:
                if item.behaviour == Behaviour.CUT:
                    raise UpstreamError("reset", "the fuzz engine cut the body")
                return
            yield chunk

    def step(self) -> None:
        """One step of the engine's work: the oldest request waiting to be answered later is
        answered, and every streamed body gets its next piece (the whole body, split in two)."""
        for item in self.dispatched:
            if item.behaviour == Behaviour.LATER and not (item.answered or item.cancelled):
                self._answer(item)
                break
        for item in self.dispatched:
            if item.behaviour in (Behaviour.STREAMED, Behaviour.CUT):
                self._stream_step(item)

    @staticmethod
    def _stream_step(item: Dispatched) -> None:
        half = len(item.body) // 2
        if item.pieces_sent == 0:
            item.chunks.put_nowait(item.body[:half])
        elif item.pieces_sent == 1:
            item.chunks.put_nowait(item.body[half:])
        elif item.pieces_sent == 2:
            item.chunks.put_nowait(None)
        item.pieces_sent += 1

    def settle(self) -> None:
        """The end: everything not cancelled is answered, every body finished."""
        for item in self.dispatched:
            if not (item.answered or item.cancelled):
                self._answer(item)
            if item.behaviour in (Behaviour.STREAMED, Behaviour.CUT):
                for _ in range(3):
                    self._stream_step(item)
