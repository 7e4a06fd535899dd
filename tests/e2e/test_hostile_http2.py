"""The sidecar's HTTP/2 front end against a hostile client (raw frames from h2 with its own
checks turned off, or from hyperframe): rapid reset (CVE-2023-44487), oversize frames, zero
windows, malformed pseudo-headers and header names, header bytes outside Latin-1, streams
reset while their upstream works. One shared mesh (tests/e2e/hostile.py)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from hyperframe.frame import GoAwayFrame, HeadersFrame, RstStreamFrame

from tests.e2e.conftest import synced, wait_until
from tests.e2e.hostile import Hostile, hostile_mesh

ENHANCE_YOUR_CALM = 0xB
FRAME_SIZE_ERROR = 0x6


@pytest.fixture(scope="module")
def mesh() -> Iterator[Hostile]:
    plane = None
    for built in hostile_mesh():
        plane = built.plane
        sidecar = built.sidecar
        # A second name for the backend with no limit on requests in flight: what reaches it
        # is not held back by web's http2MaxRequests.
        plane.register(service="open", address="127.0.0.1", port=built.backend.port,
                       servicePort=8080)  # fmt: skip
        wait_until(lambda: synced(plane, sidecar.node))  # noqa: B023 - called at once
        yield built
    assert plane is not None


class RawClient:
    """An HTTP/2 client on a socket, h2's checks of what it sends turned off."""

    def __init__(self, mesh: Hostile, window: int | None = None) -> None:
        self.sock = mesh.connect()
        config = h2.config.H2Configuration(
            client_side=True, header_encoding=None, validate_outbound_headers=False,
            normalize_outbound_headers=False, validate_inbound_headers=False,
        )  # fmt: skip
        self.conn = h2.connection.H2Connection(config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.send()
        self.events: list[h2.events.Event] = []
        self.closed = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.sock.close()

    def send(self, raw: bytes = b"") -> None:
        self.sock.sendall(self.conn.data_to_send() + raw)

    def request(self, path: bytes, authority: bytes = b"web:8080", **extra: bytes) -> int:
        stream_id: int = self.conn.get_next_available_stream_id()
        headers = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", path),
                   (b":authority", authority)]  # fmt: skip
        headers += [(name.replace("_", "-").encode(), value) for name, value in extra.items()]
        self.conn.send_headers(stream_id, headers, end_stream=True)
        return stream_id

    def read_until(self, done: Callable[[h2.events.Event], bool]) -> h2.events.Event:
        """Reads (acknowledging data) until an event for which ``done`` holds; that event."""
        position = 0
        while True:
            for event in self.events[position:]:
                if done(event):
                    return event
            position = len(self.events)
            data = self.sock.recv(1 << 20)
            if not data:
                self.closed = True
                raise AssertionError(f"connection closed: {self.events[-5:]}")
            for event in self.conn.receive_data(data):
                self.events.append(event)
                if isinstance(event, h2.events.DataReceived):
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
            self.send()

    def answer(self, stream_id: int) -> tuple[int, dict[bytes, bytes], bytes]:
        """The status, headers and body of ``stream_id`` (read until it ends)."""
        self.read_until(
            lambda e: (
                isinstance(e, (h2.events.StreamEnded, h2.events.StreamReset))
                and e.stream_id == stream_id
            )
        )
        headers: dict[bytes, bytes] = {}
        body = bytearray()
        for event in self.events:
            if getattr(event, "stream_id", None) != stream_id:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                headers = dict(event.headers)
            elif isinstance(event, h2.events.DataReceived):
                body += event.data
        return int(headers.get(b":status", b"0")), headers, bytes(body)


def test_rapid_reset_gets_goaway_and_reaches_no_backend(mesh: Hostile):
    before = len([r for r in mesh.backend.requests if r.target == "/rapid"])
    streams = 4000
    with RawClient(mesh) as client:
        raw = bytearray()
        for index in range(streams):
            stream_id = 1 + 2 * index
            block = client.conn.encoder.encode(
                [
                    (b":method", b"GET"),
                    (b":scheme", b"http"),
                    (b":path", b"/rapid"),
                    (b":authority", b"open:8080"),
                ]
            )
            raw += HeadersFrame(stream_id, block, flags=["END_HEADERS", "END_STREAM"]).serialize()
            raw += RstStreamFrame(stream_id, error_code=8).serialize()
        client.send()
        # The sidecar may close before it has read all: what the test wants.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            client.sock.sendall(raw)
        data = b""
        while True:
            try:
                chunk = client.sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    codes = [frame.error_code for frame in _goaways(data)]
    assert ENHANCE_YOUR_CALM in codes, codes
    reached = len([r for r in mesh.backend.requests if r.target == "/rapid"]) - before
    assert reached < streams // 4, reached
    wait_until(lambda: mesh.backend.open_connections <= 3, timeout=30)


def _goaways(data: bytes) -> list[GoAwayFrame]:
    """The GOAWAY frames in a server's bytes (after its SETTINGS)."""
    found = []
    position = 0
    while position + 9 <= len(data):
        length = int.from_bytes(data[position : position + 3], "big")
        if data[position + 3] == 0x7 and position + 9 + length <= len(data):
            frame = GoAwayFrame(0)
            frame.parse_body(memoryview(data[position + 9 : position + 9 + length]))
            found.append(frame)
        position += 9 + length
    return found


def test_an_oversize_frame_is_refused_at_its_header(mesh: Hostile):
    with mesh.connect() as sock:
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        # A DATA frame announcing 16 MiB - 1: refused before any of its payload is sent.
        sock.sendall((16 * 1024 * 1024 - 1).to_bytes(3, "big") + b"\x00\x00\x00\x00\x00\x01")
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    assert FRAME_SIZE_ERROR in [frame.error_code for frame in _goaways(data)]


def test_a_zero_window_client_pauses_the_upstream(mesh: Hostile):
    path = "/huge?mb=64"
    sent = mesh.backend.sent
    with RawClient(mesh, window=0) as client:
        stream_id = client.request(path.encode(), b"open:8080")
        client.send()
        wait_until(lambda: sent.get(path, 0) >= 1 << 20, timeout=30)
        with pytest.raises(AssertionError, match="condition not met"):
            wait_until(lambda: sent[path] >= 32 << 20, timeout=3)
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
        client.conn.increment_flow_control_window(1 << 30)
        client.send()
        status, _, body = client.answer(stream_id)
    assert status == 200
    assert len(body) == 64 << 20


def test_a_reset_stream_lets_go_of_its_upstream(mesh: Hostile):
    path = "/huge?mb=32"
    with RawClient(mesh, window=0) as client:
        stream_id = client.request(path.encode(), b"open:8080")
        client.send()
        wait_until(lambda: mesh.backend.sent.get(path, 0) >= 1 << 20, timeout=30)
        during = mesh.backend.open_connections  # the transfer's among them, blocked
        client.conn.reset_stream(stream_id, error_code=8)
        client.send()
        wait_until(lambda: mesh.backend.open_connections < during, timeout=30)
        # The connection serves on.
        again = client.request(b"/after-reset", b"open:8080")
        client.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        client.send()
        assert client.answer(again)[0] == 200


BAD_HEADS = {
    "space-in-path": [(b":path", b"/a b")],
    "space-in-method": [(b":method", b"GET /smuggled")],
    "bad-name": [(b"x(y)", b"1")],
    "relative-path": [(b":path", b"smuggled")],
    "absolute-path": [(b":path", b"http://web:8080/smuggled")],
}
# What h2 itself refuses, as a connection error (RFC 9113 8.2.1: CR, LF and NUL; 8.3.1: a
# host that differs from :authority).
FATAL_HEADS = {
    "crlf-in-path": [(b":path", b"/a HTTP/1.1\r\nX: y")],
    "nul-in-value": [(b"x-a", b"a\x00b")],
    "host-not-authority": [(b"host", b"other:8080")],
    "two-hosts": [(b"host", b"web:8080"), (b"host", b"web:8080")],
    "uppercase-name": [(b"X-Upper", b"1")],
}


def _send_head(client: RawClient, changes: list[tuple[bytes, bytes]]) -> int:
    stream_id: int = client.conn.get_next_available_stream_id()
    head = {b":method": b"GET", b":scheme": b"http", b":path": b"/smuggled",
            b":authority": b"web:8080"}  # fmt: skip
    extra = []
    for name, value in changes:
        if name in head:
            head[name] = value
        else:
            extra.append((name, value))
    client.conn.send_headers(stream_id, [*head.items(), *extra], end_stream=True)
    client.send()
    return stream_id


@pytest.mark.parametrize("attack", sorted(BAD_HEADS))
def test_a_malformed_head_is_a_400_and_goes_nowhere(mesh: Hostile, attack: str):
    before = len(mesh.backend.requests)
    with RawClient(mesh) as client:
        status, headers, _ = client.answer(_send_head(client, BAD_HEADS[attack]))
    assert status == 400, (status, headers)
    assert b"bad request" in headers[b"x-tulle-error"]
    assert mesh.backend.requests[before:] == []


@pytest.mark.parametrize("attack", sorted(FATAL_HEADS))
def test_a_head_h2_refuses_ends_the_connection_and_goes_nowhere(mesh: Hostile, attack: str):
    before = len(mesh.backend.requests)
    with RawClient(mesh) as client:
        _send_head(client, FATAL_HEADS[attack])
        # GOAWAY(PROTOCOL_ERROR), then the close; the GOAWAY may be lost when the close meets
        # bytes the client sent meanwhile (the kernel then resets the connection).
        codes = []
        try:
            while True:
                data = client.sock.recv(65536)
                if not data:
                    break
                events = client.conn.receive_data(data)
                codes += [
                    e.error_code for e in events if isinstance(e, h2.events.ConnectionTerminated)
                ]
        except ConnectionResetError:
            pass
    assert set(codes) <= {1}, codes  # PROTOCOL_ERROR, if any arrived
    assert mesh.backend.requests[before:] == []


def test_header_bytes_outside_latin1_are_relayed_as_they_came_and_release_their_slot(
    mesh: Hostile,
):
    euro = "€".encode()
    with RawClient(mesh) as client:
        # web allows 5 requests in flight: each of these must give its slot back.
        answers = []
        for _ in range(4):
            streams = [client.request(b"/euro", x_currency=euro) for _ in range(4)]
            client.send()
            answers += [client.answer(stream_id) for stream_id in streams]
        assert [status for status, _, _ in answers] == [200] * 16
        received = json.loads(answers[0][2])["headers"]
        assert ["x-currency", euro.decode("latin-1")] in received  # the same three bytes
        plain = client.request(b"/after")
        client.send()
        assert client.answer(plain)[0] == 200


def test_more_streams_than_allowed_are_refused(mesh: Hostile):
    with RawClient(mesh, window=0) as client:
        client.read_until(lambda e: isinstance(e, h2.events.RemoteSettingsChanged))
        assert client.conn.remote_settings.max_concurrent_streams == 100
