"""The access log's lines: every field, JSON-escaped, null for what is missing; written when
flushed, or once a batch of entries is kept."""

from __future__ import annotations

import io
import json
import time

from tulle.engine.message import Request, Response
from tulle.obs.access_log import BATCH, AccessLog


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
    log.record("outbound", _request(body=b"hello"), response, started, 10)
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
        "source": "10.1.2.3",
    }  # fmt: skip


def test_strings_are_escaped_and_missing_ones_are_null():
    stream = io.StringIO()
    log = AccessLog(stream)
    produced = Response(503, [], b"", flag="UO", reason='breaker "open"\nfor web\u00e9')
    log.record("inbound", _request(path='/q?x="1"\\', request_id=None), produced, 1.0, 0)
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
        log.record("outbound", _request(path=f"/{n}"), Response(200, []), 1.0, 0)
    written = [json.loads(line)["path"] for line in stream.getvalue().splitlines()]
    assert written == [f"/{n}" for n in range(2 * BATCH)]
    log.stop()
    written = [json.loads(line)["path"] for line in stream.getvalue().splitlines()]
    assert written == [f"/{n}" for n in range(total)]
    quiet = io.StringIO()
    AccessLog(quiet, enabled=False).record("outbound", _request(), Response(200, []), 1.0, 0)
    assert quiet.getvalue() == ""
