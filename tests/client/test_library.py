"""``tulle.client`` against a real control plane and real backends: lifecycle (ready, no config,
control plane gone), the async client with a streamed body, the exception type, metrics."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import stat
import time

import httpx
import pytest
from prometheus_client import generate_latest

import tulle.client
from tests.e2e.conftest import ControlPlane, _stop, synced, wait_until

NODE = "library~127.0.0.1~shop-frontend-0.default~default.svc.cluster.local"


@pytest.fixture(autouse=True)
def stop_the_runtime():
    yield
    tulle.client.shutdown()


def web(plane: ControlPlane, port: int) -> None:
    plane.register(service="web", address="127.0.0.1", port=port, servicePort=8080,
                   workload="web-v1")  # fmt: skip


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_without_a_control_plane_requests_fail_fast_with_the_reason():
    tulle.client.configure(xds_address=f"127.0.0.1:{closed_port()}", node_id=NODE,
                           ready_timeout=0.5, access_log=False)  # fmt: skip
    began = time.monotonic()
    with tulle.client.Client() as client, pytest.raises(httpx.TransportError) as caught:
        client.get("http://web:8080/")
    assert time.monotonic() - began < 5  # never a hang
    error = caught.value
    assert isinstance(error, tulle.client.MeshNotReadyError)
    assert "not reachable" in error.reason
    assert error.status == 503
    with pytest.raises(tulle.client.MeshNotReadyError):
        tulle.client.wait_ready(0.2)


def test_missing_settings_name_the_variable(monkeypatch):
    monkeypatch.delenv("TULLE_XDS_ADDRESS", raising=False)
    with pytest.raises(tulle.client.SettingsError, match="TULLE_XDS_ADDRESS"):
        tulle.client.Settings.load()
    monkeypatch.setenv("TULLE_XDS_ADDRESS", "control-plane")
    with pytest.raises(tulle.client.SettingsError, match=r"TULLE_XDS_ADDRESS.*not HOST:PORT"):
        tulle.client.Settings.load()
    monkeypatch.setenv("TULLE_XDS_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("TULLE_NODE_ID", "nonsense")
    with pytest.raises(tulle.client.SettingsError, match="TULLE_NODE_ID"):
        tulle.client.Settings.load()


def test_environment_configures_the_async_client_and_bodies_stream(
    control_plane, processes, monkeypatch
):
    web(control_plane, processes.http_backend("a"))
    monkeypatch.setenv("TULLE_XDS_ADDRESS", f"127.0.0.1:{control_plane.xds_port}")
    monkeypatch.setenv("TULLE_NODE_ID", NODE)
    monkeypatch.setenv("TULLE_ACCESS_LOG", "0")
    tulle.client.wait_ready(10)  # the first complete config: the endpoint may still be on its way
    wait_until(lambda: synced(control_plane, NODE))

    received: list[int] = []  # body bytes of the 200 answers

    async def scenario() -> None:
        await tulle.client.ready(10)
        async with tulle.client.AsyncClient(timeout=10) as client:
            first = await client.get("http://web:8080/")
            assert first.headers["x-backend"] == "a"
            async with client.stream("GET", "http://web:8080/stream") as response:
                pieces = response.aiter_raw()
                assert await pieces.__anext__() == b"first"  # before the backend sends more
                released = await client.get("http://web:8080/release")
                assert [piece async for piece in pieces] == [b"second"]
            received.extend([len(first.content), len(b"firstsecond"), len(released.content)])
            with pytest.raises(tulle.client.MeshError) as caught:
                await client.get("http://nowhere:1/")
            assert caught.value.reason == "no route for nowhere:1/"
            assert caught.value.flag == "NR"

    asyncio.run(scenario())
    # The streamed body counts with every byte the app read, as buffered ones do.
    exposition = generate_latest(tulle.client.metrics_registry()).decode()
    counted = re.findall(
        r'^tulle_response_bytes_total\{.*response_code="200".*\} (\S+)$', exposition, re.M
    )
    assert sum(float(value) for value in counted) == sum(received)


def test_last_good_config_stays_when_the_control_plane_goes(control_plane, processes):
    web(control_plane, processes.http_backend("a"))
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=NODE,
                           access_log=False)  # fmt: skip
    tulle.client.wait_ready(10)
    wait_until(lambda: synced(control_plane, NODE))
    with tulle.client.Client(timeout=10) as client:
        assert client.get("http://web:8080/").status_code == 200
        _stop(control_plane.proc)
        wait_until(lambda: not tulle.client.get_runtime().connected)
        assert [client.get("http://web:8080/").status_code for _ in range(20)] == [200] * 20


def test_metrics_have_the_sidecar_names_and_labels(control_plane, processes):
    web(control_plane, processes.http_backend("a"))
    tulle.client.configure(xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=NODE,
                           access_log=False, metrics_port=0)  # fmt: skip
    tulle.client.wait_ready(10)
    wait_until(lambda: synced(control_plane, NODE))
    with tulle.client.Client(timeout=10) as client:
        for _ in range(3):
            client.get("http://web:8080/")
    exposition = exposition_of(tulle.client.metrics_registry())
    assert (
        'tulle_requests_total{connection_security_policy="unknown",'
        'destination_principal="unknown",destination_service="web.default.svc.cluster.local",'
        'destination_workload="web-v1",reporter="source",response_code="200",'
        'response_flags="-",source_principal="unknown",source_workload="shop-frontend"} 3.0'
    ) in exposition
    assert "tulle_request_duration_milliseconds_bucket" in exposition


def exposition_of(registry) -> str:
    return generate_latest(registry).decode()


def test_the_admin_listener_taps_the_libraries_requests_with_its_token(
    control_plane, processes, tmp_path
):
    web(control_plane, processes.http_backend("a"))
    token_file = tmp_path / "run" / "admin-token"
    token_file.parent.mkdir(mode=0o700)
    runtime = tulle.client.configure(
        xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=NODE, access_log=False,
        admin_port=0, admin_token_file=str(token_file),
    )  # fmt: skip
    tulle.client.wait_ready(10)
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    url = f"http://127.0.0.1:{runtime.admin_port}/tap"
    refused = httpx.get(url, timeout=10)
    assert refused.status_code == 401
    assert str(token_file) in refused.json()["error"]
    bearer = {"authorization": f"Bearer {token_file.read_text().strip()}"}
    foreign = httpx.get(url, headers={**bearer, "host": "evil.example:80"}, timeout=10)
    assert foreign.status_code == 403
    bad = httpx.get(url, params={"status": "9xx"}, headers=bearer, timeout=10)
    assert bad.status_code == 400
    assert "status '9xx'" in bad.json()["error"]
    with (
        httpx.stream("GET", url, params={"path": "/tapped", "max": "1"}, headers=bearer,
                     timeout=10) as feed,
        tulle.client.Client(timeout=10) as client,
    ):  # fmt: skip
        assert feed.status_code == 200  # subscribed: what follows is tapped
        client.get("http://web:8080/untapped")  # another path: filtered out at the source
        client.get("http://web:8080/tapped/1")
        events = [json.loads(line) for line in feed.iter_lines() if line]
    assert len(events) == 1  # max=1: the feed ended after one
    (event,) = events
    assert (event["direction"], event["path"], event["status"]) == ("outbound", "/tapped/1", 200)
    assert event["dst_workload"] == "web-v1"
    assert runtime.tap.active is False  # the feed's end unsubscribed it
    tulle.client.shutdown()
    assert not token_file.exists()  # removed on the way out


def test_an_admin_port_needs_a_token_file(monkeypatch):
    monkeypatch.setenv("TULLE_XDS_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("TULLE_ADMIN_PORT", "15000")
    monkeypatch.delenv("TULLE_ADMIN_TOKEN_FILE", raising=False)
    with pytest.raises(
        tulle.client.SettingsError, match="TULLE_ADMIN_PORT needs TULLE_ADMIN_TOKEN"
    ):
        tulle.client.Settings.load()


MESH_LOG = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{accessLog: {{enabled: {enabled}, format: TEXT}}}}
"""


def test_the_mesh_sets_the_librarys_access_log_unless_the_app_turned_it_off(
    control_plane, processes, capsys
):
    web(control_plane, processes.http_backend("a"))
    control_plane.apply(MESH_LOG.format(enabled="true"))
    runtime = tulle.client.configure(
        xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=NODE
    )
    tulle.client.wait_ready(10)
    wait_until(lambda: synced(control_plane, NODE), timeout=30)
    with tulle.client.Client(timeout=10) as client:
        assert client.get("http://web:8080/texted").status_code == 200
        runtime.log.flush()
        lines = [line for line in capsys.readouterr().out.splitlines() if "/texted" in line]
        assert len(lines) == 1
        assert lines[0].startswith("[")
        assert '"GET /texted" 200 - ' in lines[0]
        control_plane.apply(MESH_LOG.format(enabled="false"))
        wait_until(lambda: synced(control_plane, NODE), timeout=30)
        assert client.get("http://web:8080/unlogged").status_code == 200
        runtime.log.flush()
        assert "/unlogged" not in capsys.readouterr().out
    tulle.client.shutdown()
    control_plane.apply(MESH_LOG.format(enabled="true"))
    quiet = tulle.client.configure(  # TULLE_ACCESS_LOG=0: off whatever the Mesh says
        xds_address=f"127.0.0.1:{control_plane.xds_port}", node_id=NODE, access_log=False
    )
    tulle.client.wait_ready(10)
    wait_until(lambda: synced(control_plane, NODE), timeout=30)
    with tulle.client.Client(timeout=10) as client:
        assert client.get("http://web:8080/still-quiet").status_code == 200
    tulle.client.shutdown()  # before capsys closes the stdout the log writes to
    assert not quiet.log.enabled
    assert "/still-quiet" not in capsys.readouterr().out
