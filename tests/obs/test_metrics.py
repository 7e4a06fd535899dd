"""Request metrics: every recorded request is in the next scrape, with its labels, duration
bucket and bytes, however many are still waiting to be counted."""

from __future__ import annotations

import re

from tests.obs.many_threads import while_threads_run
from tulle.engine.message import Request, Response, finished
from tulle.obs.metrics import SOURCE_WORKLOAD_HEADER, MeshMetrics
from tulle.obs.pending import BATCH


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of the one sample of ``name`` whose labels include ``labels``."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            found.append(float(match.group(2)))
    assert len(found) == 1, (name, labels, found)
    return found[0]


def test_every_request_is_in_the_next_scrape():
    metrics = MeshMetrics("caller")
    request = Request("POST", "/", "web:8080", [], b"12345")
    ok = Response(200, [], cluster="outbound|8080||web.default.svc.cluster.local",
                  upstream_workload="web-v1")  # fmt: skip
    failed = Response(503, [], flag="UF", cluster="outbound|8080||web.default.svc.cluster.local")
    total = 2 * BATCH + 7  # some counted at once, some still waiting at the scrape
    for n in range(total):
        ended = 100.0 + (0.0007 if n % 2 else 0.030)  # 0.7 or 30 ms
        metrics.record(finished("outbound", request, ok if n % 3 else failed, 100.0, ended, 100))
    text = metrics.exposition().decode()
    failures = len([n for n in range(total) if n % 3 == 0])
    common = {"reporter": "source", "source_workload": "caller",
              "destination_service": "web.default.svc.cluster.local"}  # fmt: skip
    assert _sample(text, "tulle_requests_total", **common, destination_workload="web-v1",
                   response_code="200", response_flags="-") == total - failures  # fmt: skip
    assert _sample(text, "tulle_requests_total", **common, destination_workload="unknown",
                   response_code="503", response_flags="UF") == failures  # fmt: skip
    ok_labels = dict(common, response_code="200")
    fast = len([n for n in range(total) if n % 3 and n % 2])
    assert _sample(text, "tulle_request_duration_milliseconds_bucket", **ok_labels, le="1") == fast
    assert (
        _sample(text, "tulle_request_duration_milliseconds_count", **ok_labels) == total - failures
    )
    assert _sample(text, "tulle_request_bytes_total", **ok_labels) == 5 * (total - failures)
    assert _sample(text, "tulle_response_bytes_total", **ok_labels) == 100 * (total - failures)
    # A second scrape counts nothing twice.
    assert metrics.exposition().decode() == text


def test_a_served_request_is_counted_as_its_callers_by_the_destination():
    metrics = MeshMetrics("web-v1")
    called = Request("GET", "/", "web:8080", [(SOURCE_WORKLOAD_HEADER, "caller-v2")])
    anonymous = Request("GET", "/", "web:8080", [])
    for request in (called, called, anonymous):
        metrics.record(finished("inbound", request, Response(200, []), 1.0, 1.001, 3, "web"))
    text = metrics.exposition().decode()
    common = {"reporter": "destination", "destination_service": "web",
              "destination_workload": "web-v1", "response_code": "200"}  # fmt: skip
    assert _sample(text, "tulle_requests_total", **common, source_workload="caller-v2") == 2
    assert _sample(text, "tulle_requests_total", **common, source_workload="unknown") == 1


def test_requests_recorded_from_many_threads_during_scrapes_are_each_counted_once():
    metrics = MeshMetrics("caller")
    request = Request("GET", "/", "web:8080", [])
    response = Response(200, [], cluster="outbound|8080||web")
    threads, each = 4, 5 * BATCH + 3

    def record() -> None:
        for _ in range(each):
            metrics.record(finished("outbound", request, response, 1.0, 1.001, 1))

    while_threads_run([record] * threads, metrics.exposition)  # a scrape folds
    text = metrics.exposition().decode()
    assert _sample(text, "tulle_requests_total", destination_service="web") == threads * each
    assert _sample(text, "tulle_response_bytes_total", destination_service="web") == threads * each
