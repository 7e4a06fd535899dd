"""The TLS layer in front of the sidecar's own DetectingFront (HTTP/1.1 and HTTP/2 by ALPN)
behind a PERMISSIVE port."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tests.tls_material import Material
from tests.transport.tls_helpers import (
    curl,
    need,
    run,
    serve,
)


def test_the_sidecars_detecting_front_behind_a_permissive_port(material: Material) -> None:
    """The proxy's DetectingFront swaps its transport's protocol to the HTTP/1.1 or HTTP/2
    front end it picks: over TLS that transport is a TlsTransport, and what follows the swap
    must reach the new front end. curl over mTLS (HTTP/1.1, and HTTP/2 by ALPN) and in plain
    text, on one PERMISSIVE port."""
    import io

    from tulle.engine.message import Request, Response
    from tulle.obs.access_log import AccessLog
    from tulle.obs.metrics import MeshMetrics
    from tulle.proxy.detecting import DetectingFront
    from tulle.proxy.h2_front import H2Front
    from tulle.proxy.http_front import Http1Front
    from tulle.proxy.in_flight import InFlight
    from tulle.proxy.recording import Destination
    from tulle.proxy.recording import Recorder as ProxyRecorder

    recorder = ProxyRecorder(AccessLog(io.StringIO()), MeshMetrics("inbound"))
    in_flight = InFlight()

    def answer(request: Request, destination: Destination, done: Callable[[Response], None]):
        done(Response(200, [("content-type", "text/plain")], b"hello " + request.path.encode()))
        return lambda: None

    def front() -> DetectingFront:
        return DetectingFront(
            lambda: Http1Front("inbound", answer, recorder, in_flight),
            lambda dst: H2Front("inbound", answer, recorder, in_flight, dst),
            in_flight,
        )

    async def scenario() -> None:
        context = material.server_context(alpn=("h2", "http/1.1"))
        server = await serve(front, context, mode="PERMISSIVE")
        cert = ("--cert", str(material.frontend.cert), "--key", str(material.frontend.key))
        for version in ("--http1.1", "--http2"):
            code, out, err = await curl(
                server.port, material, *cert, version, "-w", " %{http_version}"
            )
            assert (code, out) == (
                0,
                b"hello /who " + (b"2" if version == "--http2" else b"1.1"),
            ), err
        process = await asyncio.create_subprocess_exec(
            need("curl"),
            "-sS",
            "--max-time",
            "10",
            f"http://127.0.0.1:{server.port}/plain",
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 15)
        assert out == b"hello /plain"
        assert server.refused.items == []

    run(scenario())
