"""The access log's lines: every field, JSON-escaped, null for what is missing; written when
flushed, or once a batch of entries is kept."""

from __future__ import annotations

import functools
import io
import json
import time

from tests.obs.many_threads import while_threads_run
from tulle.engine.message import Request, Response, finished
from tulle.obs.access_log import AccessLog
from tulle.obs.pending import BATCH


def _request(path: str = "/a", request_id: str | None = "id-1", body: bytes = b"") -> Request:
    headers = [("accept", "*/*")]
    if request_id is not None:
        headers.append(("x-request-id", request_id))
    return Request("POST", path, "web:8080", headers, body, "10.1.2.3")


def test_an_entry_has_every_field_with_its_value():
    stream = io.StringIO()
    log = AccessLog(stream)
    response = Response(200, [], b"x" * 10, route="default", cluster="outbound|8080||web",
                        upstream="127.0.0.1:9000", attempts=2)  # fmt: skip
    started = time.time() - 0.5
    log.record(finished("outbound", _request(body=b"hello"), response, started, time.time(), 10))
    assert stream.getvalue() == ""  # kept until flushed
    log.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert 500 <= entry.pop("duration_ms") < 60_000
    assert entry.pop("start_time") == round(started, 6)
    assert entry == {
        "listener": "outbound", "method": "POST",
        "authority": "web:8080", "path": "/a", "status": 200, "flags": "-", "reason": None,
        "route": "default", "cluster": "outbound|8080||web", "upstream": "127.0.0.1:9000",
        "attempts": 2, "bytes_received": 5, "bytes_sent": 10, "request_id": "id-1",
        "source": "10.1.2.3", "peer_principal": None,
    }  # fmt: skip


def test_the_peer_principal_is_the_caller_served_or_the_upstream_called_over_mtls():
    stream = io.StringIO()
    log = AccessLog(stream)
    served = _request()
    served.peer_principal = "spiffe://cluster.local/ns/default/sa/frontend"
    log.record(finished("inbound", served, Response(200, []), 1.0, 1.0, 0, service="web"))
    called = Response(200, [], upstream_principal="spiffe://cluster.local/ns/shop/sa/web")
    log.record(finished("outbound", _request(), called, 1.0, 1.0, 0))
    log.record(finished("outbound", _request(), Response(200, []), 1.0, 1.0, 0))
    log.flush()
    entries = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [e["peer_principal"] for e in entries] == [
        "spiffe://cluster.local/ns/default/sa/frontend",
        "spiffe://cluster.local/ns/shop/sa/web",
        None,
    ]


def test_strings_are_escaped_and_missing_ones_are_null():
    stream = io.StringIO()
    log = AccessLog(stream)
    produced = Response(503, [], b"", flag="UO", reason='breaker "open"\nfor web\u00e9')
    request = _request(path='/q?x="1"\\', request_id=None)
    log.record(finished("inbound", request, produced, 1.0, 1.0, 0, service="web"))
    log.flush()
    entry = json.loads(stream.getvalue())
    assert entry["path"] == '/q?x="1"\\'
    assert entry["reason"] == 'breaker "open"\nfor web\u00e9'
    assert entry["flags"] == "UO"
    assert [entry[k] for k in ("route", "cluster", "upstream", "request_id")] == [None] * 4
    assert stream.getvalue().isascii()


def test_entries_are_written_in_order_a_batch_at_a_time_and_none_when_disabled():
    stream = io.StringIO()
    log = AccessLog(stream)
    total = 2 * BATCH + 10
    for n in range(total):
        log.record(finished("outbound", _request(path=f"/{n}"), Response(200, []), 1.0, 1.0, 0))
    written = [json.loads(line)["path"] for line in stream.getvalue().splitlines()]
    assert written == [f"/{n}" for n in range(2 * BATCH)]
    log.stop()
    written = [json.loads(line)["path"] for line in stream.getvalue().splitlines()]
    assert written == [f"/{n}" for n in range(total)]
    quiet = io.StringIO()
    done = finished("outbound", _request(), Response(200, []), 1.0, 1.0, 0)
    AccessLog(quiet, enabled=False).record(done)
    assert quiet.getvalue() == ""


def test_entries_recorded_from_many_threads_during_flushes_are_each_written_once():
    stream = io.StringIO()
    log = AccessLog(stream)
    threads, each = 4, 5 * BATCH + 3

    def record(thread: int) -> None:
        for n in range(each):
            request = _request(path=f"/{thread}/{n}")
            log.record(finished("outbound", request, Response(200, []), 1.0, 1.0, 0))

    targets = [functools.partial(record, thread) for thread in range(threads)]
    while_threads_run(targets, log.flush)  # flushing, as the flusher task does
    log.flush()
    written = [json.loads(line)["path"] for line in stream.getvalue().splitlines()]
    assert sorted(written) == sorted(f"/{t}/{n}" for t in range(threads) for n in range(each))
    for thread in range(threads):  # each thread's entries in the order it recorded them
        mine = [path for path in written if path.startswith(f"/{thread}/")]
        assert mine == [f"/{thread}/{n}" for n in range(each)]
