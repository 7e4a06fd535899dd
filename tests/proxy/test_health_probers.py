"""The sidecar's reading of ``TULLE_APP_PROBERS`` (tulle.proxy.health.parse_probers): what the
injector writes is read back; anything else is refused naming the probe and the field, and
nothing that could break out of the probe's request head (a line break in a path or header) is
taken. And the health handler, driven directly: /ready says why the sidecar is not ready."""

from __future__ import annotations

import asyncio
import json

import pytest

from tulle.proxy.health import AppProbe, HealthHandler, ProbersError, parse_probers
from tulle.transport.http_server import Request


def test_what_the_injector_writes_is_read() -> None:
    text = json.dumps({
        "/app-health/web/livez": {"httpGet": {"path": "/live?x=1", "port": 8080, "scheme": "HTTPS",
                                              "httpHeaders": [{"name": "X-A", "value": "b"}]},
                                  "timeoutSeconds": 3},
        "/app-health/web/readyz": {"httpGet": {"port": 8081}},
    })  # fmt: skip
    assert parse_probers(text) == {
        "/app-health/web/livez": AppProbe("/live?x=1", 8080, True, (("X-A", "b"),), 3.0),
        "/app-health/web/readyz": AppProbe("/", 8081, False, (), 1.0),
    }
    assert parse_probers("") == {}


@pytest.mark.parametrize(
    ("probers", "message"),
    [
        ("{", "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
        ("[]", "not a JSON object of probes by path"),
        ({"/healthz": {"httpGet": {"port": 1}}}, "'/healthz': not /app-health/<container>/<probe>"),
        ({"/app-health/a/livez": {}}, "/app-health/a/livez: no httpGet"),
        ({"/app-health/a/livez": {"httpGet": {"port": 0}}},
         "/app-health/a/livez: httpGet.port 0 is not a port number"),
        ({"/app-health/a/livez": {"httpGet": {"port": 1, "scheme": "FTP"}}},
         "/app-health/a/livez: httpGet.scheme 'FTP' is not HTTP or HTTPS"),
        ({"/app-health/a/livez": {"httpGet": {"port": 1}, "timeoutSeconds": 0}},
         "/app-health/a/livez: timeoutSeconds 0 is not a positive number"),
        ({"/app-health/a/livez": {"httpGet": {"port": 1, "path": "/x HTTP/1.1\r\nHost: evil"}}},
         "/app-health/a/livez: httpGet path or header holds a line break or space"),
        ({"/app-health/a/livez": {"httpGet": {"port": 1, "httpHeaders": [
            {"name": "X", "value": "a\r\nInjected: 1"}]}}},
         "/app-health/a/livez: httpGet path or header holds a line break or space"),
        ({"/app-health/a/livez": {"httpGet": {"port": 1, "httpHeaders": [{"value": "v"}]}}},
         "/app-health/a/livez: httpHeaders: {'value': 'v'} is not a name and a value"),
    ],
)  # fmt: skip
def test_anything_else_is_refused_naming_the_probe(probers: object, message: str) -> None:
    text = probers if isinstance(probers, str) else json.dumps(probers)
    with pytest.raises(ProbersError) as raised:
        parse_probers(text)
    assert str(raised.value) == message


def test_ready_says_why_not() -> None:
    reason: list[str | None] = ["waiting for config from the control plane"]
    handler = HealthHandler(lambda: reason[0], {})
    answer = asyncio.run(handler(Request("GET", "/ready", {}, {})))
    assert (answer.status, answer.body) == (503, b"waiting for config from the control plane\n")
    reason[0] = None
    answer = asyncio.run(handler(Request("GET", "/ready", {}, {})))
    assert (answer.status, answer.body) == (200, b"LIVE\n")
