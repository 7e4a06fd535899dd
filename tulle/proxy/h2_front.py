"""The HTTP/2 front end (gRPC included): h2 for framing, one engine request per stream. Request
bodies are buffered (so they can be retried); responses, with their trailers, are sent when the
upstream's answer is complete."""

from __future__ import annotations

import asyncio
import time
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame

from tulle.codec.http2 import H2Sender, text_headers
from tulle.engine.message import ByteStream, Request, Response, UpstreamError
from tulle.engine.tasks import Cancel, resolver
from tulle.proxy.http_front import Dispatcher
from tulle.proxy.in_flight import InFlight
from tulle.proxy.recording import Destination, Recorder

REPLAY_LIMIT = 1024 * 1024
REFUSED_STREAM = 7
LAST_POSSIBLE_STREAM = 2**31 - 1
DRAIN_PING = b"tulle-dr"  # a drain's PING; its ack means the client sent all it had started
DRAIN_PING_WAIT = 1.0  # seconds: a client that does not ack by then is drained anyway


class H2Front(asyncio.Protocol):
    """One downstream HTTP/2 connection."""

    def __init__(
        self,
        listener: str,
        dispatch: Dispatcher,
        recorder: Recorder,
        in_flight: InFlight,
        destination: Destination = None,
    ) -> None:
        self.listener = listener
        self.dispatch = dispatch
        self.recorder = recorder
        self.in_flight = in_flight
        self.destination = destination
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.sender = H2Sender(self.conn)
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, ByteStream] = {}
        self.peer = ""
        self.serving = 0  # streams being answered
        # Streams waiting for their answer: how to cancel the request, and where it will go.
        self.waiting: dict[int, tuple[Cancel, asyncio.Future[Response]]] = {}
        self.drain_timer: asyncio.TimerHandle | None = None  # set by a drain's first step
        self.last_stream_id: int | None = None  # set by its second: later streams are refused

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.conn.initiate_connection()
        self._flush()
        self.in_flight.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.drain_timer is not None:
            self.drain_timer.cancel()
        self.in_flight.closed(self)

    def drain(self) -> None:
        """The proxy is draining, in the two steps of RFC 9113 section 6.8. First a GOAWAY
        naming the last possible stream, and a PING: the client opens no stream after that
        GOAWAY, and by the time it acks the PING it has sent every stream it opened before,
        so each is taken (a single GOAWAY naming the last stream seen would refuse a stream
        already on its way, and grpcio fails such a call when the connection closes). Then a
        second GOAWAY names the last stream taken; those streams finish, later ones are
        refused, and the connection closes once none is left. The GOAWAYs are written beside
        h2, which would send nothing after its own (python-hyper/h2#1181)."""
        if self.draining or self.transport is None:
            return
        self._flush()
        self.transport.write(GoAwayFrame(0, last_stream_id=LAST_POSSIBLE_STREAM).serialize())
        self.conn.ping(DRAIN_PING)
        self._flush()
        loop = asyncio.get_running_loop()
        self.drain_timer = loop.call_later(DRAIN_PING_WAIT, self._last_stream_known)

    @property
    def draining(self) -> bool:
        """A drain has begun on this connection."""
        return self.drain_timer is not None

    def _last_stream_known(self) -> None:
        """The drain's second step: GOAWAY naming the last stream taken."""
        transport = self.transport
        if self.last_stream_id is not None or transport is None or transport.is_closing():
            return
        if self.drain_timer is not None:
            self.drain_timer.cancel()
        self.last_stream_id = self.conn.highest_inbound_stream_id
        self._flush()
        transport.write(GoAwayFrame(0, last_stream_id=self.last_stream_id).serialize())
        self._close_if_done()

    def _close_if_done(self) -> None:
        """A draining connection closes once its streams are answered and sent (bodies wait
        in the sender for flow-control window)."""
        if self.last_stream_id is None or self.serving or self.sender.outgoing:
            return
        if self.transport is not None:
            self._flush()
            self.transport.close()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                if self.last_stream_id is not None and event.stream_id > self.last_stream_id:
                    self.conn.reset_stream(event.stream_id, error_code=REFUSED_STREAM)
                    continue
                headers = text_headers(event.headers)
                if event.stream_ended is not None:
                    self._start(event.stream_id, headers, b"")
                else:
                    # The body streams to the upstream as it arrives (client and bidirectional
                    # streaming); up to REPLAY_LIMIT bytes are kept so a retry can resend it.
                    stream = ByteStream(replay_limit=REPLAY_LIMIT)
                    self.bodies[event.stream_id] = stream
                    self._start(event.stream_id, headers, stream)
            elif isinstance(event, h2.events.DataReceived):
                receiving = self.bodies.get(event.stream_id)
                if receiving is not None:
                    receiving.push(event.data)
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended = self.bodies.pop(event.stream_id, None)
                if ended is not None:
                    ended.finish()
            elif isinstance(event, h2.events.StreamReset):
                cut = self.bodies.pop(event.stream_id, None)
                if cut is not None:
                    cut.finish(UpstreamError("reset", "client reset the stream"))
                self.sender.forget(event.stream_id)
                waiting = self.waiting.pop(event.stream_id, None)
                if waiting is not None:  # the client gave up (a deadline, a cancelled call)
                    cancel, answer = waiting
                    cancel()  # the upstream's stream is reset too, as Envoy does
                    answer.cancel()
            elif isinstance(event, h2.events.PingAckReceived):
                if self.draining and event.ping_data == DRAIN_PING:
                    self._last_stream_known()
            elif isinstance(event, h2.events.WindowUpdated):
                self.sender.pump(event.stream_id or None)
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        self._flush()
        self._close_if_done()

    def _start(
        self, stream_id: int, headers: list[tuple[str, str]], body: bytes | ByteStream
    ) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(stream_id, headers, body))
        self.in_flight.track(task)
        self.serving += 1

        def served(_: asyncio.Task[None]) -> None:
            self.serving -= 1
            self._close_if_done()

        task.add_done_callback(served)

    async def _serve(
        self, stream_id: int, headers: list[tuple[str, str]], body: bytes | ByteStream
    ) -> None:
        started = time.time()
        pseudo = {k: v for k, v in headers if k.startswith(":")}
        regular = [(k, v) for k, v in headers if not k.startswith(":")]
        request = Request(
            pseudo.get(":method", "GET"),
            pseudo.get(":path", "/"),
            pseudo.get(":authority", ""),
            regular,
            body,
            self.peer,
            http2=True,
        )
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        cancel = self.dispatch(request, self.destination, resolver(answer))
        if not answer.done():
            self.waiting[stream_id] = (cancel, answer)
        try:
            response = await answer
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the proxy is stopping, not the client going away
            reason = "client reset the stream"  # before the answer
            self.recorder.client_gone(self.listener, request, started, reason, self.destination)
            return
        finally:
            self.waiting.pop(stream_id, None)
        if isinstance(response.body, bytes):
            sent = self._respond(stream_id, response)
        else:
            sent = await self._stream(stream_id, response)
        self.recorder.record(self.listener, request, response, started, sent, self.destination)

    async def _stream(self, stream_id: int, response: Response) -> int:
        """Send a response whose body is still arriving (server streaming): each piece as it
        comes, then the trailers."""
        assert not isinstance(response.body, bytes)
        headers = [(":status", str(response.status))]
        headers += [
            (k, v) for k, v in response.headers if k not in ("connection", "content-length")
        ]
        sent = 0
        try:
            self.conn.send_headers(stream_id, headers)
            self._flush()
            async for chunk in response.body:
                sent += len(chunk)
                self.sender.append(stream_id, chunk)
                self._flush()
            self.sender.close(stream_id, response.trailers or None)
        except UpstreamError:
            self.conn.reset_stream(stream_id, error_code=2)  # INTERNAL_ERROR: the body was cut
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            await response.release()
        self._flush()
        return sent

    def _respond(self, stream_id: int, response: Response) -> int:
        body = response.body if isinstance(response.body, bytes) else b""
        headers = [(":status", str(response.status))]
        headers += [
            (k, v) for k, v in response.headers if k not in ("connection", "content-length")
        ]
        headers_only = not body and not response.trailers
        try:
            self.conn.send_headers(stream_id, headers, end_stream=headers_only)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return 0
        if not headers_only:
            self.sender.send(stream_id, body, response.trailers or None)
        self._flush()
        return len(body)
