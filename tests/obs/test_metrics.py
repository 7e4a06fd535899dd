"""Request metrics: every recorded request is in the next scrape, with its labels, duration
bucket and bytes, however many are still waiting to be counted."""

from __future__ import annotations

import re

from tulle.engine.message import Request, Response
from tulle.obs.metrics import BATCH, MeshMetrics


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
        metrics.record(request, ok if n % 3 else failed, 0.7 if n % 2 else 30.0, 100)
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
