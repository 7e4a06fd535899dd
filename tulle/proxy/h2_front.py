"""The HTTP/2 front end (gRPC included): h2 for framing, one engine request per stream. Request
bodies stream to the upstream (the first REPLAY_LIMIT bytes kept for a retry); responses are
sent as flow control allows, bodies that arrive in pieces piece by piece, then the trailers.

What a hostile client could use is bounded here (see :mod:`tulle.proxy.limits`): a frame
longer than the maximum is refused at its header; a stream the client resets is cancelled
upstream, and a client that resets most of its streams early gets GOAWAY(ENHANCE_YOUR_CALM)
(the rapid reset of CVE-2023-44487); a client that floods PINGs or SETTINGS without reading the
answers is cut off; response bytes held for a client that does not read pause the upstream
(per stream) and refuse new streams (per connection); request bodies are acknowledged only as
the upstream takes them; a malformed request head gets a 400."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame

from tulle.codec.h2_connection import BoundedH2Connection
from tulle.codec.http2 import (
    FrameError,
    Goaway,
    GoawayFilter,
    H2Sender,
    request_headers,
    wire_headers,
)
from tulle.engine import errors
from tulle.engine.message import ByteStream, Response, UpstreamError, mesh_response
from tulle.engine.tasks import Cancel, resolver
from tulle.proxy.http_front import Dispatcher
from tulle.proxy.in_flight import InFlight
from tulle.proxy.limits import BUFFER_WATERMARK, FrontLimits
from tulle.proxy.recording import Destination, Recorder
from tulle.proxy.requests import http2_request
from tulle.transport.mtls import connection_facts, peer_principal

log = logging.getLogger(__name__)

REPLAY_LIMIT = 1024 * 1024
REFUSED_STREAM = 7
ENHANCE_YOUR_CALM = 0xB
LAST_POSSIBLE_STREAM = 2**31 - 1
DRAIN_PING = b"tulle-dr"  # a drain's PING; its ack means the client sent all it had started
DRAIN_PING_WAIT = 1.0  # seconds: a client that does not ack by then is drained anyway
PREMATURE = 1.0  # seconds: a stream reset by the client sooner, before its answer, counts
_DEFAULT_LIMITS = FrontLimits()


class _Served:
    """A stream being served: its task, when it began, and (once the engine has it) how to
    cancel its request and the future its answer comes to; then the response being sent."""

    __slots__ = ("answer", "began", "blocked", "cancel", "response", "started", "task")

    def __init__(self, began: float) -> None:
        self.began = began
        self.task: asyncio.Task[None] | None = None
        self.started = False  # the task has begun (a reset before that cancels it unseen)
        self.cancel: Cancel | None = None
        self.answer: asyncio.Future[Response] | None = None
        self.response: Response | None = None  # being sent
        self.blocked: asyncio.Event | None = None  # set when its queued bytes go down


class H2Front(asyncio.Protocol):
    """One downstream HTTP/2 connection."""

    def __init__(
        self,
        listener: str,
        dispatch: Dispatcher,
        recorder: Recorder,
        in_flight: InFlight,
        destination: Destination = None,
        limits: FrontLimits | None = None,
    ) -> None:
        self.listener = listener
        self.dispatch = dispatch
        self.recorder = recorder
        self.in_flight = in_flight
        self.destination = destination
        self.limits = limits = limits or _DEFAULT_LIMITS
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = BoundedH2Connection(config=config)
        self.conn.local_settings.max_concurrent_streams = limits.max_concurrent_streams
        self.guard = GoawayFilter.for_server()  # the client's GOAWAYs, oversize frames, floods
        self.sender = H2Sender(self.conn)
        self.transport: asyncio.Transport | None = None
        self.bodies: dict[int, ByteStream] = {}
        self.held: dict[int, int] = {}  # request-body bytes not yet acknowledged, by stream
        self.peer = ""
        self.peer_principal: str | None = None  # the SPIFFE id the peer proved over mTLS
        self.local_ip = ""  # the address the connection came to
        self.sni = ""  # the server name its TLS client sent
        self.served: dict[int, _Served] = {}  # streams being answered
        self.begun = 0  # streams begun on this connection
        self.premature = 0  # of which the client reset early (see PREMATURE)
        self.unread_answers = 0  # PING/SETTINGS answers asked for while the client reads none
        self.idle_since = time.monotonic()
        self.closing = False
        self.drain_timer: asyncio.TimerHandle | None = None  # set by a drain's first step
        self.last_stream_id: int | None = None  # set by its second: later streams are refused

    @property
    def serving(self) -> int:
        """Streams being answered."""
        return len(self.served)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = self.transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        self.peer_principal = peer_principal(transport)
        self.local_ip, self.sni = connection_facts(transport, self.destination)
        self.conn.initiate_connection()
        self._flush()
        self.in_flight.opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.drain_timer is not None:
            self.drain_timer.cancel()
        for stream_id in list(self.served):
            self._abandon(stream_id, "client closed the connection")
        for body in self.bodies.values():
            body.finish(UpstreamError("client", "client closed the connection"))
        self.bodies.clear()
        self.in_flight.closed(self)

    # --- draining, timeouts, closing ---------------------------------------------------------

    def drain(self) -> None:
        """The proxy is draining, in the two steps of RFC 9113 section 6.8. First a GOAWAY
        naming the last possible stream, and a PING: the client opens no stream after that
        GOAWAY, and by the time it acks the PING it has sent every stream it opened before,
        so each is taken (a single GOAWAY naming the last stream seen would refuse a stream
        already on its way, and grpcio fails such a call when the connection closes). Then a
        second GOAWAY names the last stream taken; those streams finish, later ones are
        refused, and the connection closes once none is left. The GOAWAYs are written beside
        h2, which would send nothing after its own (python-hyper/h2#1181)."""
        if self.draining or self.closing or self.transport is None:
            return
        if self.transport.is_closing():
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

    def expire(self, now: float) -> None:
        """Called every second or so: a connection with no stream for the idle timeout is
        closed (GOAWAY, as Envoy's idle_timeout)."""
        idle_for = now - self.idle_since
        if not self.served and not self.closing and idle_for > self.limits.idle_timeout:
            self._go_away(0, "idle")

    def _go_away(self, code: int, reason: str) -> None:
        """End the connection: GOAWAY with ``code`` naming the last stream seen, then close."""
        if self.closing or self.transport is None:
            return
        if code:
            log.warning("closing HTTP/2 connection from %s: %s", self.peer or "?", reason)
        self.closing = True
        self._flush()
        goaway = GoAwayFrame(0, last_stream_id=self.conn.highest_inbound_stream_id)
        goaway.error_code = code
        goaway.additional_data = reason.encode()[:200]
        self.transport.write(goaway.serialize())
        self.transport.close()

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
        if self.last_stream_id is None or self.served or self.sender.outgoing:
            return
        if self.transport is not None:
            self._flush()
            self.transport.close()

    # --- writing -------------------------------------------------------------------------------

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:
        """The client is not reading: hand h2 nothing more (queued bytes wait, and streamed
        bodies pause their upstream at BUFFER_WATERMARK)."""
        self.sender.paused = True

    def resume_writing(self) -> None:
        """The client reads again."""
        self.sender.paused = False
        self.sender.pump()
        self._flush()
        self._unblock()

    def _unblock(self) -> None:
        """Streams waiting for their queued bytes to go down may go on."""
        for served_id, served in self.served.items():
            if served.blocked is not None and self.sender.waiting(served_id) < BUFFER_WATERMARK:
                served.blocked.set()
                served.blocked = None

    # --- reading -------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        guard = self.guard
        answers_wanted = guard.answers_wanted
        try:
            data, goaways = guard.feed(data)
            events = self.conn.receive_data(data) if data else []
        except FrameError as error:
            self._go_away(error.code, str(error))
            return
        except h2.exceptions.ProtocolError:
            self.closing = True
            self._flush()
            if self.transport is not None:
                self.transport.close()
            return
        if guard.answers_wanted > answers_wanted:
            self._count_unread_answers(guard.answers_wanted - answers_wanted)
        if goaways:
            self._client_going_away(goaways[-1])
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                self._request_received(event)
            elif isinstance(event, h2.events.DataReceived):
                self._data(event)
            elif isinstance(event, h2.events.StreamEnded):
                ended = self.bodies.pop(event.stream_id, None)
                if ended is not None:
                    ended.finish()
                self.held.pop(event.stream_id, None)
            elif isinstance(event, h2.events.StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, h2.events.PingAckReceived):
                if self.draining and event.ping_data == DRAIN_PING:
                    self._last_stream_known()
            elif isinstance(event, h2.events.WindowUpdated):
                self.sender.pump(event.stream_id or None)
                self._unblock()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self.sender.pump()  # a new initial window size changes every stream's window
                self._unblock()
            elif isinstance(event, h2.events.ConnectionTerminated) and self.transport is not None:
                self.transport.close()
        if self.closing:
            return
        self._flush()
        self._close_if_done()

    def _client_going_away(self, goaway: Goaway) -> None:
        """The client sent GOAWAY: it opens no more streams. Without an error, the streams it
        opened are answered, then the connection closes (h2 would stop at once:
        python-hyper/h2#1181, hence the filter); with one, it closes now."""
        if goaway.error_code:
            if self.transport is not None:
                self.closing = True
                self.transport.close()
            return
        if self.last_stream_id is None:
            self.last_stream_id = self.conn.highest_inbound_stream_id

    def _count_unread_answers(self, count: int) -> None:
        """PINGs and SETTINGS want answers; a client that asks for them while it does not
        read what is already written for it is flooding (Envoy caps such queued control
        frames at 1,000)."""
        transport = self.transport
        if transport is None or not transport.get_write_buffer_size():
            self.unread_answers = 0
            return
        self.unread_answers += count
        if self.unread_answers > self.limits.max_unread_control_frames:
            self._go_away(ENHANCE_YOUR_CALM, "control frames flood (PING or SETTINGS)")

    def _request_received(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        if (self.last_stream_id is not None and stream_id > self.last_stream_id) or (
            self.sender.queued > self.limits.connection_buffer
        ):
            # Draining and past the last stream; or the client is not reading what it has. (The
            # client may have reset it already, later in the same read: nothing to refuse then.)
            self._reset_quietly(stream_id, REFUSED_STREAM)
            return
        headers = request_headers(event.headers)
        ended = event.stream_ended is not None
        if isinstance(headers, str):
            self._refuse(stream_id, headers, ended)
            return
        if ended:
            self._start(stream_id, headers, b"")
            return
        # The body streams to the upstream as it arrives (client and bidirectional
        # streaming); up to REPLAY_LIMIT bytes are kept so a retry can resend it. Each
        # piece is acknowledged (more window for the client) once the upstream takes it.
        stream = ByteStream(_nothing, lambda: self._acknowledge(stream_id), 4, 1, REPLAY_LIMIT)
        self.bodies[stream_id] = stream
        self._start(stream_id, headers, stream)

    def _refuse(self, stream_id: int, reason: str, ended: bool) -> None:
        """A malformed request head: 400 with the reason (the request goes nowhere)."""
        log.info("refused HTTP/2 request from %s: %s", self.peer or "?", reason)
        answer = mesh_response(errors.MeshError(400, "DPE", f"bad request: {reason}"))
        self._respond(stream_id, answer)
        if not ended:
            self._reset_quietly(stream_id, 0)  # NO_ERROR: the rest of its body is not wanted

    def _data(self, event: h2.events.DataReceived) -> None:
        stream_id = event.stream_id
        receiving = self.bodies.get(stream_id)
        size = event.flow_controlled_length
        if receiving is None or not receiving.paused:
            self.conn.acknowledge_received_data(size, stream_id)
        else:  # acknowledged when the upstream catches up (ByteStream's resume)
            self.held[stream_id] = self.held.get(stream_id, 0) + size
        if receiving is not None:
            receiving.push(event.data)

    def _acknowledge(self, stream_id: int) -> None:
        held = self.held.pop(stream_id, 0)
        if held and not self.closing:
            try:
                self.conn.acknowledge_received_data(held, stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                return
            self._flush()

    def _reset(self, stream_id: int) -> None:
        """The client reset a stream: its request is cancelled (upstream too, as Envoy
        does); an early reset counts toward the rapid-reset limit."""
        cut = self.bodies.pop(stream_id, None)
        if cut is not None:
            cut.finish(UpstreamError("client", "client reset the stream"))
        self.held.pop(stream_id, None)
        self.sender.forget(stream_id)
        served = self.served.get(stream_id)
        if served is None:
            return
        if time.monotonic() - served.began < PREMATURE:
            self.premature += 1
            limits = self.limits
            if self.begun >= limits.premature_reset_streams and self.premature * 2 > self.begun:
                self._abandon(stream_id, "client reset the stream")
                reason = f"{self.premature} of {self.begun} streams reset before their answers"
                self._go_away(ENHANCE_YOUR_CALM, reason)
                return
        self._abandon(stream_id, "client reset the stream")

    def _abandon(self, stream_id: int, reason: str) -> None:
        """Stop serving a stream whose client is gone: a task not begun is cancelled before it
        dispatches anything; a request under way is cancelled; a response being sent lets go
        of its upstream."""
        served = self.served.get(stream_id)
        if served is None:
            return
        if not served.started and served.task is not None:
            served.task.cancel()
            del self.served[stream_id]
            return
        if served.answer is not None and not served.answer.done():
            if served.cancel is not None:
                served.cancel()  # the upstream's stream is reset too, as Envoy does
            served.answer.cancel()
        elif served.response is not None:
            response = served.response
            served.response = None
            if not isinstance(response.body, bytes):
                task = asyncio.get_running_loop().create_task(response.release())
                self.in_flight.track(task)
        if served.blocked is not None:
            served.blocked.set()

    # --- serving -------------------------------------------------------------------------------

    def _start(
        self, stream_id: int, headers: list[tuple[str, str]], body: bytes | ByteStream
    ) -> None:
        self.begun += 1
        served = self.served[stream_id] = _Served(time.monotonic())
        task = asyncio.get_running_loop().create_task(self._serve(stream_id, headers, body))
        served.task = task
        self.in_flight.track(task)

        def finished(_: asyncio.Task[None]) -> None:
            if self.served.get(stream_id) is served:
                del self.served[stream_id]
            if not self.served:
                self.idle_since = time.monotonic()
            self._close_if_done()

        task.add_done_callback(finished)

    async def _serve(
        self, stream_id: int, headers: list[tuple[str, str]], body: bytes | ByteStream
    ) -> None:
        served = self.served[stream_id]
        served.started = True
        started = time.time()
        request = http2_request(headers, body, self.peer, self.limits.paths)
        if isinstance(request, Response):
            self._respond(stream_id, request)
            return
        request.peer_principal = self.peer_principal
        request.local_ip, request.sni = self.local_ip, self.sni
        answer: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        served.answer = answer
        try:
            served.cancel = self.dispatch(request, self.destination, resolver(answer))
        except Exception as failure:  # a bug: answered with its reason, the slot given back
            log.exception("request failed inside the proxy")
            reason = f"internal error: {failure!r}"
            resolver(answer)(mesh_response(errors.MeshError(500, "DPE", reason), request.is_grpc))
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
            served.cancel = served.answer = None
        if isinstance(response.body, bytes):
            ended = time.time()  # before the write: see Recorder.record
            sent = self._respond(stream_id, response)
        else:
            served.response = response
            sent, ended = await self._stream(stream_id, served, response)
        self.recorder.record(
            self.listener, request, response, started, sent, self.destination, ended
        )

    async def _stream(
        self, stream_id: int, served: _Served, response: Response
    ) -> tuple[int, float]:
        """Send a response whose body is still arriving (server streaming): each piece as it
        comes, then the trailers; while BUFFER_WATERMARK bytes wait for the client, the
        upstream's body is not read (so its connection pauses). The bytes sent, and the time
        the last frame was handed to the connection (0: it was cut; the end is when it is
        recorded)."""
        assert not isinstance(response.body, bytes)
        sent = 0
        ended = 0.0
        try:
            self.conn.send_headers(stream_id, _response_headers(response))
            self._flush()
            async for chunk in response.body:
                sent += len(chunk)
                self.sender.append(stream_id, chunk)
                self._flush()
                while (
                    self.sender.waiting(stream_id) >= BUFFER_WATERMARK
                    and served.response is not None
                ):
                    served.blocked = asyncio.Event()
                    await served.blocked.wait()
                if served.response is None:  # the client reset the stream meanwhile
                    return sent, ended
            ended = time.time()  # before the last frame's write: see Recorder.record
            self.sender.close(stream_id, response.trailers or None)
        except UpstreamError:
            self._reset_quietly(stream_id, 2)  # INTERNAL_ERROR: the body was cut
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            await response.release()
        self._flush()
        return sent, ended

    def _reset_quietly(self, stream_id: int, code: int) -> None:
        try:
            self.conn.reset_stream(stream_id, error_code=code)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return
        self.sender.forget(stream_id)
        self._flush()

    def _respond(self, stream_id: int, response: Response) -> int:
        body = response.body if isinstance(response.body, bytes) else b""
        headers_only = not body and not response.trailers
        try:
            self.conn.send_headers(stream_id, _response_headers(response), end_stream=headers_only)
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            return 0
        if not headers_only:
            self.sender.send(stream_id, body, response.trailers or None)
        self._flush()
        return len(body)


def _response_headers(response: Response) -> list[tuple[bytes, bytes]]:
    headers = [(":status", str(response.status))]
    headers += [(k, v) for k, v in response.headers if k not in ("connection", "content-length")]
    return wire_headers(headers)


def _nothing() -> None:
    pass
