"""What a hostile client sends the control plane's API, against a real ``tulle controlplane``:
alias bombs, deep nesting, huge bodies, bytes that are not UTF-8, addresses that are not one
host, names that are not DNS labels, wrong JSON types. Each is refused with a 4xx that says why,
the log holds no traceback, and the API goes on answering."""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_bounded_yaml import alias_bomb
from tests.e2e.conftest import ControlPlane, _stop, start_control_plane, wait_until
from tulle.api.bounded_yaml import MAX_DEPTH
from tulle.control.bodies import MAX_APPLY_BYTES, MAX_JSON_BYTES, MAX_JSON_DEPTH

pytestmark = pytest.mark.timeout(120)

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: %s}
spec:
  hosts: [%s.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"""


_probes = itertools.count()


class Plane:
    """A control plane whose log goes to a file, and requests to it."""

    def __init__(self, plane: ControlPlane, log: Path) -> None:
        self.plane, self.log = plane, log

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.plane.auth, **kwargs.pop("headers", {})}
        return httpx.request(
            method, f"{self.plane.api}{path}", headers=headers, timeout=60, **kwargs
        )

    def apply(self, body: bytes) -> httpx.Response:
        return self.request("POST", "/api/v1/resources", content=body)

    def register(self, **fields: Any) -> httpx.Response:
        return self.request("POST", "/api/v1/endpoints", content=json.dumps(fields).encode())

    def answers(self) -> None:
        """The API still answers, and still takes a good change."""
        assert self.request("GET", "/healthz").text == "ok\n"
        name = f"probe{next(_probes)}"
        assert self.apply((ENTRY % (name, name)).encode()).status_code == 200

    def log_has_no_traceback(self) -> None:
        text = self.log.read_text()
        assert "Traceback" not in text, text


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    root = tmp_path_factory.mktemp("plane")
    (root / "config").mkdir()
    log = root / "controlplane.log"
    with open(log, "w") as output:
        control = start_control_plane(root / "state", root / "config", stderr=output)
    yield Plane(control, log)
    _stop(control.proc)


def test_an_alias_bomb_is_refused_at_once_and_the_api_answers_after(plane: Plane):
    bomb = alias_bomb()
    assert len(bomb) < 600
    response = plane.apply(bomb.encode())
    assert response.status_code == 400
    (finding,) = response.json()["findings"]
    assert finding.startswith("<request>:5: ERROR - -/-: -: YAML refused: aliases expand to more")
    plane.answers()
    plane.log_has_no_traceback()


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/api/v1/resources", b"[" * 100_000, f"nesting deeper than {MAX_DEPTH} levels"),
        ("/api/v1/resources", b"a: " + b"{b: " * 5_000 + b"}" * 5_000, "nesting deeper"),
        ("/api/v1/resources", b'{"a": ' * 3_000 + b"1" + b"}" * 3_000, "nesting deeper"),
        ("/api/v1/endpoints", b"[" * 30_000 + b"]" * 30_000, f"deeper than {MAX_JSON_DEPTH}"),
        ("/api/v1/endpoints", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "nests deeper"),
    ],
    ids=["yaml-flow", "yaml-mapping", "json-as-yaml", "json-array", "json-object"],
)
def test_deep_nesting_is_a_400_with_the_reason_never_a_500(plane: Plane, path, body, reason):
    response = plane.request("POST", path, content=body)
    assert response.status_code == 400, response.text
    assert reason in response.text
    plane.answers()
    plane.log_has_no_traceback()


def test_a_body_past_the_limit_is_refused_with_413(plane: Plane):
    response = plane.apply(b"a: " + b"x" * (MAX_APPLY_BYTES + 1))
    assert response.status_code == 413
    assert response.json() == {"error": f"request body is larger than {MAX_APPLY_BYTES} bytes"}
    registration = b'{"service": "a", "labels": {"x": "' + b"y" * MAX_JSON_BYTES + b'"}}'
    response = plane.request("POST", "/api/v1/endpoints", content=registration)
    assert response.status_code == 413
    assert f"the limit is {MAX_JSON_BYTES}" in response.json()["error"]
    plane.answers()


def test_a_body_announced_too_large_is_refused_before_it_is_sent(plane: Plane):
    with socket.create_connection(("127.0.0.1", plane.plane.http_port), timeout=30) as sock:
        sock.sendall(
            b"POST /api/v1/resources HTTP/1.1\r\nHost: cp\r\n"
            b"Content-Length: 104857600\r\n\r\n"  # 100 MiB, of which nothing comes
        )
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413 Payload Too Large\r\n"), reply
    assert b"connection: close" in reply


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("/api/v1/resources", b"a: \xff\xfe", "<request> is not UTF-8 text"),
        ("/api/v1/endpoints", b'{"service": "\xc3("}', "registration is not UTF-8 text"),
    ],
)
def test_bytes_that_are_not_utf8_are_a_400(plane: Plane, path, body, error):
    response = plane.request("POST", path, content=body)
    assert response.status_code == 400
    assert response.json()["error"].startswith(error)


GOOD = {"service": "web", "address": "127.0.0.1", "port": 8080}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"address": "0.0.0.0"}, "address: '0.0.0.0' is the unspecified address"),
        ({"address": "::"}, "address: '::' is the unspecified address"),
        ({"address": "224.0.0.1"}, "address: '224.0.0.1' is a multicast address"),
        ({"address": "255.255.255.255"}, "address: '255.255.255.255' is the broadcast address"),
        ({"address": "fe80::1%eth0"}, "address: 'fe80::1%eth0': a zone id"),
        ({"address": "::ffff:0.0.0.0"}, "address: '::ffff:0.0.0.0' maps an IPv4 address"),
        ({"namespace": "../../x"}, "namespace: '../../x' is not a valid DNS label"),
        ({"namespace": "a/b"}, "namespace: 'a/b' is not a valid DNS label"),
        ({"serviceAccount": "../root"}, "serviceAccount: '../root' is not a valid name"),
        ({"workload": "x/../../y"}, "workload: 'x/../../y' is not a valid name"),
        ({"locality": "eu/../../x"}, "locality: 'eu/../../x' is not a locality"),
        ({"labels": {"app": "../x"}}, "labels: label value '../x' is not valid"),
        ({"service": "../x"}, "service: '../x' is not a valid host name"),
    ],
)
def test_addresses_and_names_are_checked_naming_the_field(plane: Plane, change, message):
    response = plane.register(**{**GOOD, **change})
    assert response.status_code == 400
    assert response.json()["error"].startswith(f"bad registration: {message}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (json.dumps({**GOOD, "port": "80"}), "port: must be an integer, got '80' (str)"),
        (json.dumps({**GOOD, "port": True}), "port: must be an integer, got True (bool)"),
        (json.dumps({**GOOD, "port": 80.5}), "port: must be an integer, got 80.5 (float)"),
        (json.dumps({**GOOD, "port": 0}), "port: 0 is not a port number (1-65535)"),
        (json.dumps({**GOOD, "port": 65536}), "port: 65536 is not a port number (1-65535)"),
        (json.dumps({**GOOD, "port": -1}), "port: -1 is not a port number (1-65535)"),
        (json.dumps({**GOOD, "servicePort": 0}), "servicePort: 0 is not a port number"),
        (json.dumps({**GOOD, "port": 10**30}), "is not a port number"),
        ('{"service": "web", "address": "127.0.0.1", "port": ' + "9" * 5000 + "}", "too many"),
        (json.dumps({**GOOD, "labels": ["a"]}), "labels: must be an object, got ['a'] (list)"),
        (json.dumps({**GOOD, "labels": {"a": 1}}), "labels: keys and values must be strings"),
        (json.dumps({**GOOD, "healthy": "yes"}), "healthy: must be true or false"),
        (json.dumps({**GOOD, "address": 2130706433}), "address: must be a string"),
        (json.dumps([GOOD]), "a registration must be a JSON object"),
        ('{"service": "web", "service": "api", "port": 1}', "'service' appears twice"),
        ("{'service': 'web'}", "registration is not JSON"),
        ("", "a registration must be a JSON object"),
    ],
)
def test_wrong_json_types_and_ports_out_of_range_are_a_400(plane: Plane, body, message):
    response = plane.request("POST", "/api/v1/endpoints", content=body.encode())
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_resource_names_and_namespaces_are_dns_names(plane: Plane):
    text = (ENTRY % ("db", "db")).replace("{name: db}", "{name: db, namespace: ../../x}")
    response = plane.apply(text.encode())
    assert response.status_code == 400
    (finding,) = response.json()["findings"]
    assert "metadata.namespace: '../../x' is not a valid DNS label" in finding
    response = plane.request("DELETE", "/api/v1/resources/vs/default/a..b")
    assert response.status_code == 400
    assert response.json()["error"].startswith("name: 'a..b' is not a valid name")
    response = plane.request("DELETE", "/api/v1/resources/vs/Shop/a")
    assert response.json()["error"].startswith("namespace: 'Shop' is not a valid DNS label")


def test_a_report_file_name_must_be_printable(plane: Plane):
    response = plane.request(
        "POST", "/api/v1/resources", content=b"a: 1", headers={"x-tulle-filename": "x" * 300}
    )
    assert response.status_code == 400
    assert response.json()["error"].startswith("header x-tulle-filename:")


def test_a_watched_file_with_an_alias_bomb_gets_a_finding_with_file_and_line(plane: Plane):
    path = plane.plane.config_dir / "bomb.yaml"
    path.write_text(alias_bomb())

    def findings() -> list[str]:
        status = plane.request("GET", "/api/v1/config-status").json()
        return [line for line in status["findings"] if line.startswith(str(path))]

    wait_until(lambda: findings() != [], timeout=60)
    assert findings() == [
        f"{path}:5: ERROR - -/-: -: YAML refused: aliases expand to more than 10000 nodes "
        "(an alias bomb?); write the repeated parts out, or repeat them less"
    ]
    path.unlink()
    plane.answers()
    plane.log_has_no_traceback()


def exchange(plane: Plane, request: bytes) -> bytes:
    """Send ``request`` on a new connection (as far as the server reads it) and read the
    answer until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", plane.plane.http_port), timeout=60) as sock:
        with contextlib.suppress(ConnectionError):  # the server may stop reading once it answers
            sock.sendall(request)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"GET /" + b"a" * (1 << 20), b"request URL is too long"),
        (b"GET / HTTP/1.1\r\nHost: cp\r\nX-Big: " + b"a" * (1 << 20), b"request head is too large"),
        (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 20_000, b"request head"),
    ],
    ids=["url", "header-value", "many-headers"],
)
def test_a_huge_request_head_is_refused_before_it_ends(plane: Plane, request_bytes, error):
    reply = exchange(plane, request_bytes)  # the head never ends: only a refusal answers it
    assert reply.startswith(b"HTTP/1.1 400 Bad Request\r\n"), reply[:200]
    assert error in reply
    plane.answers()


def test_pipelined_requests_are_answered_in_order_however_many(plane: Plane):
    count = 2_000
    auth = f"Authorization: Bearer {plane.plane.token}".encode()
    requests = b"".join(
        b"GET /api/v1/resources?name=n%d HTTP/1.1\r\nHost: cp\r\n%s\r\n\r\n" % (i, auth)
        for i in range(count)
    )
    reply = exchange(plane, requests + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    answers = reply.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == count + 1
    assert all(b"no resource default/n%d" % i in answers[i] for i in range(count))
    assert answers[-1].endswith(b"ok\n")
