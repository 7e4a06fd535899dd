"""The sidecar's admin and stats listeners: the admin one answers state-changing requests only
with the token from its 0600 file, and refuses foreign Host and Origin headers (DNS rebinding, a
web page's form); the stats one serves GET /ready and /stats/prometheus and nothing else. The
handlers are driven directly (no sockets), then a started Proxy on real sockets."""

from __future__ import annotations

import asyncio
import io
import os
import stat
from pathlib import Path

import grimp
import httpx
import pytest

from tulle.obs.access_log import AccessLog
from tulle.proxy.admin import AdminHandler, SidecarView, StatsHandler
from tulle.proxy.admin_guard import (
    AdminGuard,
    AdminTokenError,
    default_token_path,
    read_token_file,
    remove_token_file,
    write_token_file,
)
from tulle.proxy.app import Proxy
from tulle.proxy.settings import ProxySettings, SettingsError
from tulle.transport.http_server import Request, Response

NODE = "sidecar~127.0.0.1~web-0.default~default.svc.cluster.local"
PORT = 15000
TOKEN = "s3cret-token"
HOST = f"127.0.0.1:{PORT}"


def request(method: str, path: str, **headers: str) -> Request:
    """A request as a client on the sidecar's host sends it (Host names the listener)."""
    given = {"host": HOST, **{k.replace("_", "-"): v for k, v in headers.items()}}
    return Request(method, path, {}, {k: v for k, v in given.items() if v})


def bearer(token: str = TOKEN) -> str:
    return f"Bearer {token}"


class Sidecar:
    """A Proxy (not started) seen through a SidecarView, with drain and quit recorded."""

    def __init__(self) -> None:
        self.proxy = Proxy("127.0.0.1:1", NODE, access_log=AccessLog(io.StringIO()))
        self.calls: list[str] = []
        self.not_ready: str | None = None
        proxy = self.proxy
        self.view = SidecarView(
            lambda: self.not_ready, proxy.metrics.exposition, proxy.xds, proxy.engine,
            proxy.pool, lambda: self.calls.append("drain"), lambda: self.calls.append("quit"),
            proxy.tap,
        )  # fmt: skip
        guard = AdminGuard(TOKEN)
        guard.listening("127.0.0.1", PORT, Path("/run/tulle/web-0.admin-token"))
        self.admin = AdminHandler(self.view, guard)
        self.stats = StatsHandler(self.view.readiness, self.view.exposition)


@pytest.fixture
def sidecar() -> Sidecar:
    return Sidecar()


def answer(handler: AdminHandler | StatsHandler, req: Request) -> Response:
    return asyncio.run(handler(req))


def error(response: Response) -> str:
    import json

    message: str = json.loads(response.body)["error"]
    return message


# --- the token ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/drain", "/quitquitquit"])
def test_a_state_changing_request_without_the_token_is_401_with_the_reason(sidecar, path):
    response = answer(sidecar.admin, request("POST", path))
    assert response.status == 401
    assert "needs 'Authorization: Bearer <token>'" in error(response)
    assert "/run/tulle/web-0.admin-token" in error(response)  # where to find it, never it
    assert TOKEN not in response.body.decode()
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert sidecar.calls == []


@pytest.mark.parametrize("given", ["Bearer wrong", "Bearer ", "Basic czNjcmV0LXRva2Vu", TOKEN])
def test_a_wrong_token_is_401(sidecar, given):
    response = answer(sidecar.admin, request("POST", "/drain", authorization=given))
    assert response.status == 401
    assert TOKEN not in response.body.decode()
    assert sidecar.calls == []


def test_the_right_token_drains_and_quits(sidecar):
    drained = answer(sidecar.admin, request("POST", "/drain", authorization=bearer()))
    assert (drained.status, drained.body) == (200, b"draining\n")
    quit_ = answer(sidecar.admin, request("POST", "/quitquitquit", authorization=bearer()))
    assert (quit_.status, quit_.body) == (200, b"OK\n")
    assert sidecar.calls == ["drain", "quit"]


def test_reading_needs_no_token_but_a_state_changing_route_read_with_get_is_405(sidecar):
    for path in ("/ready", "/stats/prometheus", "/config_dump", "/clusters"):
        assert answer(sidecar.admin, request("GET", path)).status == 200, path
    wrong = answer(sidecar.admin, request("GET", "/drain"))
    assert (wrong.status, wrong.headers["allow"]) == (405, "POST")
    assert answer(sidecar.admin, request("GET", "/nothing")).status == 404
    assert sidecar.calls == []


# --- Host and Origin ------------------------------------------------------------------------


@pytest.mark.parametrize("host", [f"localhost:{PORT}", f"[::1]:{PORT}", f"LocalHost:{PORT}"])
def test_each_loopback_name_of_the_listener_is_a_good_host(sidecar, host):
    response = answer(sidecar.admin, request("POST", "/drain", host=host, authorization=bearer()))
    assert response.status == 200
    assert sidecar.calls == ["drain"]


@pytest.mark.parametrize(
    "host",
    [f"attacker.example:{PORT}", "127.0.0.1", "127.0.0.1:80", f"127.0.0.1:{PORT}.evil", ""],
)
def test_a_rebinding_host_is_refused_even_with_the_token_and_for_reading(sidecar, host):
    drain = answer(sidecar.admin, request("POST", "/drain", host=host, authorization=bearer()))
    assert drain.status == 403
    assert "does not name this admin listener" in error(drain)
    dump = answer(sidecar.admin, request("GET", "/config_dump", host=host))
    assert dump.status == 403  # a rebound page cannot read the config either
    assert sidecar.calls == []


@pytest.mark.parametrize("origin", ["http://attacker.example", "null", f"https://{HOST}"])
def test_a_cross_origin_post_is_refused_even_with_the_token(sidecar, origin):
    # What a browser sends for a form on another site: a simple POST, no preflight, its Origin.
    form = request("POST", "/quitquitquit", origin=origin, authorization=bearer(),
                   content_type="application/x-www-form-urlencoded")  # fmt: skip
    response = answer(sidecar.admin, form)
    assert response.status == 403
    assert "cross-origin requests" in error(response)
    assert sidecar.calls == []


def test_the_listeners_own_origin_is_accepted(sidecar):
    own = request("POST", "/drain", origin=f"http://{HOST}", authorization=bearer())
    assert answer(sidecar.admin, own).status == 200


def test_nothing_is_allowed_before_the_listener_is_bound():
    guard = AdminGuard(TOKEN)
    refused = guard.refusal(request("GET", "/ready", host="127.0.0.1:0"), False)
    assert refused is not None
    assert refused.status == 403


# --- the read-only stats listener -----------------------------------------------------------


def test_the_stats_listener_serves_ready_and_metrics(sidecar):
    ready = answer(sidecar.stats, request("GET", "/ready", host="198.18.0.2:15020"))
    assert (ready.status, ready.body) == (200, b"LIVE\n")
    metrics = answer(sidecar.stats, request("GET", "/stats/prometheus"))
    assert metrics.status == 200
    assert metrics.headers["content-type"].startswith("text/plain; version=0.0.4")
    sidecar.not_ready = "DRAINING"
    assert answer(sidecar.stats, request("GET", "/ready")).body == b"DRAINING\n"
    assert answer(sidecar.stats, request("GET", "/ready")).status == 503


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/drain", "/quitquitquit", "/ready"])
def test_the_stats_listener_refuses_every_other_method(sidecar, method, path):
    response = answer(sidecar.stats, request(method, path, authorization=bearer()))
    assert (response.status, response.headers["allow"]) == (405, "GET")
    assert "read-only" in error(response)
    assert sidecar.calls == []


@pytest.mark.parametrize("path", ["/config_dump", "/clusters", "/drain", "/quitquitquit", "/"])
def test_the_stats_listener_has_no_other_route(sidecar, path):
    assert answer(sidecar.stats, request("GET", path)).status == 404


# --- the token file -------------------------------------------------------------------------


def test_the_token_file_is_0600_in_a_0700_directory_and_replaced_at_once(tmp_path):
    path = tmp_path / "run" / "web-0.admin-token"
    write_token_file(path, "first")
    write_token_file(path, "second")
    assert read_token_file(path) == "second"
    assert path.read_text() == "second\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["web-0.admin-token"]


def test_a_directory_others_may_change_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(AdminTokenError, match="can be changed by other users"):
        write_token_file(shared / "web-0.admin-token", TOKEN)
    shared.chmod(0o1777)  # sticky, as /tmp: nobody else can replace the file
    write_token_file(shared / "web-0.admin-token", TOKEN)


def test_the_token_file_is_removed_only_while_it_holds_this_sidecars_token(tmp_path):
    path = tmp_path / "web-0.admin-token"
    write_token_file(path, "newer")
    remove_token_file(path, "older")  # another sidecar's now: left alone
    assert path.exists()
    remove_token_file(path, "newer")
    assert not path.exists()


def test_the_default_token_file_is_in_the_runtime_directory(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    expected = tmp_path / "tulle" / "proxy-web-0.default-15000.admin-token"
    assert default_token_path("web-0", "default", 15000) == expected
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert default_token_path("web-0", "default", 15000).parent.name == f"tulle-{os.getuid()}"


# --- options --------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "198.18.0.2", "::", "example.com"])
def test_the_admin_listener_binds_loopback_only(host):
    with pytest.raises(SettingsError, match=r"--admin-host: .* is not a loopback address"):
        ProxySettings(node_id=NODE, admin_host=host).check()
    for loopback in ("127.0.0.1", "::1", "localhost"):
        ProxySettings(node_id=NODE, admin_host=loopback).check()


def test_the_stats_port_cannot_be_the_admin_port():
    with pytest.raises(SettingsError, match="--stats-port: 15000 is the admin listener's port"):
        ProxySettings(node_id=NODE, stats_port=15000).check()


# --- the listeners of a started sidecar -----------------------------------------------------


def test_a_started_sidecar_writes_its_token_and_serves_both_listeners(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))

    async def scenario() -> None:
        proxy = Proxy("127.0.0.1:1", NODE, admin_port=0, stats_port=0,
                      access_log=AccessLog(io.StringIO()))  # fmt: skip
        await proxy.start()
        token_file = tmp_path / "tulle" / f"proxy-web-0.default-{proxy.admin_port}.admin-token"
        assert proxy.admin_guard.token_file == token_file
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = read_token_file(token_file)
        admin = f"http://127.0.0.1:{proxy.admin_port}"
        stats = f"http://127.0.0.1:{proxy.stats_port}"
        async with httpx.AsyncClient(timeout=10) as client:
            assert (await client.get(f"{stats}/stats/prometheus")).status_code == 200
            assert (await client.get(f"{stats}/config_dump")).status_code == 404
            assert (await client.post(f"{stats}/drain")).status_code == 405
            assert (await client.post(f"{admin}/drain")).status_code == 401
            assert not proxy.draining
            auth = {"authorization": f"Bearer {token}"}
            assert (await client.post(f"{admin}/drain", headers=auth)).status_code == 200
            assert proxy.draining
            assert (await client.get(f"{stats}/ready")).text == "DRAINING\n"  # still serving
            assert (await client.post(f"{admin}/quitquitquit", headers=auth)).status_code == 200
        await proxy.stopped.wait()
        await proxy.drain_and_stop(0.1)
        assert not token_file.exists()

    asyncio.run(scenario())


def test_a_sidecar_whose_token_file_cannot_be_written_does_not_start(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")

    async def scenario() -> None:
        proxy = Proxy("127.0.0.1:1", NODE, admin_port=0, admin_token_file=str(blocked / "t"),
                      access_log=AccessLog(io.StringIO()))  # fmt: skip
        try:
            with pytest.raises(AdminTokenError, match=f"admin token file {blocked / 't'}"):
                await proxy.start()
        finally:
            await proxy.drain_and_stop(0)

    asyncio.run(scenario())


# --- no import circle -----------------------------------------------------------------------


def test_the_admin_listener_does_not_import_the_proxy_process():
    graph = grimp.build_graph("tulle", cache_dir=None)  # TYPE_CHECKING imports included
    assert (
        graph.find_shortest_chain(importer="tulle.proxy.admin", imported="tulle.proxy.app") is None
    )
    circles = [
        (module, imported)
        for module in graph.find_children("tulle.proxy")
        for imported in graph.find_modules_directly_imported_by(module)
        if imported.startswith("tulle.proxy.")
        and graph.find_shortest_chain(importer=imported, imported=module) is not None
    ]
    assert circles == []


def test_a_tap_needs_the_token_as_it_shows_the_requests(sidecar):
    refused = answer(sidecar.admin, request("GET", "/tap"))
    assert refused.status == 401
    assert error(refused).startswith("GET /tap shows the sidecar's requests: it needs ")
    tapped = answer(sidecar.admin, request("GET", "/tap", authorization=bearer()))
    assert tapped.status == 200
    assert tapped.stream is not None
    assert tapped.headers["content-type"] == "application/x-ndjson"
    assert sidecar.proxy.tap.active is True  # subscribed, until the stream is closed
    asyncio.run(tapped.stream.aclose())  # type: ignore[attr-defined]
    assert sidecar.proxy.tap.active is False


def test_a_tap_with_a_filter_that_means_nothing_is_400(sidecar):
    given = Request("GET", "/tap", {"status": ["5x"]}, {"host": HOST, "authorization": bearer()})
    refused = answer(sidecar.admin, given)
    assert refused.status == 400
    assert error(refused) == "tap: status '5x': give a code (503) or a class (1xx to 5xx)"
    assert sidecar.proxy.tap.active is False
