"""The span exporter: sampled requests' records go to an OTLP endpoint over HTTP
(``POST /v1/traces``, ``application/x-protobuf``), in batches, from a thread of its own.

The request path only appends a record to a list (``record``: no lock, no I/O, no encoding);
the list is bounded (``queue_size``), and a record that finds it full is dropped and counted.
The thread wakes every ``interval`` seconds and takes what is there, or when a batch is full
and takes whole batches, encodes each (:mod:`tulle.obs.otlp`) and posts it; a failed post
drops its batch (counted, and logged at most once a minute): spans are never retried, so an
endpoint that is down costs the workload nothing but the counts. The counts are metrics in
the workload's registry: ``tulle_trace_spans_exported_total`` and
``tulle_trace_spans_dropped_total{reason}`` (``queue_full``, ``export_failed``).

Whoever it sends to authenticates the workload the way the control plane's HTTP API does: with
``Authorization: Bearer <token>``, the replica's bootstrap token read from its file before each
post (a re-issued token is picked up)."""

from __future__ import annotations

import http.client
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Final
from urllib.parse import urlsplit

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import CollectorRegistry

from tulle.obs.finished import Finished
from tulle.obs.otlp import export_request

log = logging.getLogger("tulle.tracing")

QUEUE_SIZE: Final = 2048
BATCH: Final = 512
INTERVAL: Final = 1.0
TIMEOUT: Final = 5.0
_WARN_EVERY: Final = 60.0
OTLP_PATH: Final = "/v1/traces"
CONTENT_TYPE: Final = "application/x-protobuf"

Encoder = Callable[[list[Finished]], bytes]


class EndpointError(ValueError):
    """An OTLP endpoint that is not an http(s) URL; the message says which and why."""


def otlp_url(endpoint: str) -> tuple[str, str, int, str]:
    """Scheme, host, port and path of an OTLP/HTTP endpoint: ``http(s)://host[:port][/path]``;
    a URL without a path gets OTLP's ``/v1/traces``."""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise EndpointError(f"OTLP endpoint {endpoint!r}: not an http:// or https:// URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as error:
        raise EndpointError(f"OTLP endpoint {endpoint!r}: {error}") from None
    path = parts.path if parts.path not in ("", "/") else OTLP_PATH
    return parts.scheme, parts.hostname, port, path


class TraceCounts:
    """The exporter's counts as metrics, read at scrape time from ``counts`` (exported,
    dropped because the queue was full, dropped because their export failed): the request
    path only adds to plain numbers."""

    def __init__(self, counts: Callable[[], tuple[int, int, int]]) -> None:
        self.counts = counts

    def collect(self) -> Iterator[CounterMetricFamily]:
        """The two counters."""
        exported_count, dropped_count, failed_count = self.counts()
        exported = CounterMetricFamily(
            "tulle_trace_spans_exported", "Spans the OTLP endpoint accepted."
        )
        exported.add_metric([], exported_count)
        yield exported
        dropped = CounterMetricFamily(
            "tulle_trace_spans_dropped",
            "Spans not exported: the queue was full, or their batch's export failed.",
            labels=["reason"],
        )
        dropped.add_metric(["queue_full"], dropped_count)
        dropped.add_metric(["export_failed"], failed_count)
        yield dropped


class SpanExporter:
    """Sends sampled requests' spans to ``endpoint`` (OTLP/HTTP protobuf) off the request
    path. ``token``: returns the bearer token to send (None: none). ``encode``: a batch to the
    request body (by default :func:`tulle.obs.otlp.export_request` with ``resource``)."""

    def __init__(
        self,
        endpoint: str,
        resource: list[tuple[str, str | int | float | bool]],
        token: Callable[[], str | None] | None = None,
        registry: CollectorRegistry | None = None,
        queue_size: int = QUEUE_SIZE,
        batch: int = BATCH,
        interval: float = INTERVAL,
        ssl_context: ssl.SSLContext | None = None,
        encode: Encoder | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.scheme, self.host, self.port, self.path = otlp_url(endpoint)
        self.resource = resource
        self.token = token
        self.queue_size, self.batch, self.interval = queue_size, batch, interval
        self.ssl_context = ssl_context
        self._encode = encode
        self.records: list[Finished] = []
        self.exported = self.dropped = self.failed = 0
        self._wake = threading.Event()
        self._stopping = False
        self._connection: http.client.HTTPConnection | None = None
        self._last_warning = 0.0
        self._sending = threading.Lock()  # one export at a time (the thread, or a flush)
        # Not "_thread": compiled, the attribute becomes a C field "__thread", a keyword of GCC.
        self._worker: threading.Thread | None = None
        if registry is not None:
            registry.register(TraceCounts(self.counts))

    def counts(self) -> tuple[int, int, int]:
        """Spans exported, dropped (queue full), dropped (export failed) so far."""
        return self.exported, self.dropped, self.failed

    # --- the request path ---------------------------------------------------------------------

    def record(self, done: Finished) -> None:
        """Queue a sampled request's span: never blocks; dropped (counted) when full."""
        records = self.records
        count = len(records)
        if count >= self.queue_size:
            self.dropped += 1
            return
        records.append(done)
        if count + 1 == self.batch:
            self._wake.set()

    # --- the exporter's thread ----------------------------------------------------------------

    def start(self) -> SpanExporter:
        """Start the thread (a daemon: it never holds the process up)."""
        if self._worker is None:
            self._worker = threading.Thread(target=self._run, name="tulle-traces", daemon=True)
            self._worker.start()
        return self

    def _run(self) -> None:
        while True:
            full = self._wake.wait(self.interval) and not self._stopping
            self._wake.clear()
            self.flush(full)
            if self._stopping:
                return

    def flush(self, full: bool = False) -> None:
        """Export everything queued so far (in batches); with ``full``, only whole batches: the
        rest waits for the next (woken by a full batch, the thread would otherwise post the
        few recorded while it sent, a small batch at a post's whole cost: at 100 % sampling
        a sidecar posted ~70 spans a time instead of 512). The interval sends the rest."""
        least = self.batch if full else 1
        with self._sending:
            while len(self.records) >= least:
                records = self.records
                count = min(len(records), self.batch)
                taken = records[:count]
                del records[:count]
                self._send(taken)

    def stop(self, timeout: float = 5.0) -> None:
        """Export what is queued (the thread's last round), then stop the thread; waits at
        most ``timeout`` seconds for it."""
        self._stopping = True
        self._wake.set()
        thread, self._worker = self._worker, None
        if thread is None:
            self.flush()
        else:
            thread.join(timeout)
            if thread.is_alive():
                return  # still posting: it ends on its own (a daemon)
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _body(self, batch: list[Finished]) -> bytes:
        if self._encode is not None:
            return self._encode(batch)
        return export_request(batch, self.resource)

    def _send(self, batch: list[Finished]) -> None:
        try:
            body = self._body(batch)
            headers = {"content-type": CONTENT_TYPE}
            token = self.token() if self.token is not None else None
            if token:
                headers["authorization"] = f"Bearer {token}"
            status, reason = self._post(body, headers)
        except Exception as error:
            self._failed(len(batch), f"{type(error).__name__}: {error}")
            return
        if 200 <= status < 300:
            self.exported += len(batch)
        else:
            self._failed(len(batch), f"HTTP {status} {reason}")

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        """One POST on the kept connection (a new one after a failure)."""
        for again in (True, False):
            connection = self._connection
            if connection is None:
                if self.scheme == "https":
                    connection = http.client.HTTPSConnection(
                        self.host, self.port, timeout=TIMEOUT, context=self.ssl_context
                    )
                else:
                    connection = http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)
                self._connection = connection
            try:
                connection.request("POST", self.path, body, headers)
                response = connection.getresponse()
                text = response.read(1024)
                if response.will_close:
                    connection.close()
                    self._connection = None
                reason = response.reason
                if not 200 <= response.status < 300 and text:
                    reason = f"{reason}: {text.decode('utf-8', 'replace').strip()[:200]}"
                return response.status, reason
            except (OSError, http.client.HTTPException):
                connection.close()
                self._connection = None
                if not again:
                    raise
        raise AssertionError("unreachable")

    def _failed(self, count: int, why: str) -> None:
        self.failed += count
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY or not self._last_warning:
            self._last_warning = now
            log.warning(
                "tracing: %d spans not exported to %s: %s (counted in "
                "tulle_trace_spans_dropped_total; warned once a minute)",
                count, self.endpoint, why,
            )  # fmt: skip
