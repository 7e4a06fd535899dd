"""A real ``tulle proxy`` process and its two HTTP listeners besides traffic: the admin one on
loopback (POST /drain and /quitquitquit only with the token from the 0600 file the sidecar
names at start; foreign Host and Origin refused) and the read-only stats one (GET /ready and
/stats/prometheus, nothing else). No control plane is needed: the sidecar serves both while it
waits for its config."""

from __future__ import annotations

import re
import socket
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import BIN, _stop

NODE = "sidecar~127.0.0.1~web-0.default~default.svc.cluster.local"


@dataclass
class Started:
    proc: subprocess.Popen[str]
    said: str  # its first two lines on stderr
    admin: str
    stats: str
    token_file: Path

    def token(self) -> str:
        return self.token_file.read_text().strip()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Started]:
    token_file = tmp_path / "run" / "web-0.admin-token"
    proc = subprocess.Popen(
        [str(BIN / "tulle"), "proxy", "--xds", f"127.0.0.1:{closed_port()}", "--node-id", NODE,
         "--admin-port", "0", "--stats-port", "0", "--http-proxy-port", "0",
         "--admin-token-file", str(token_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        said = proc.stderr.readline() + proc.stderr.readline()
        admin = re.search(r"admin 127\.0\.0\.1:(\d+)", said)
        stats = re.search(r"stats 127\.0\.0\.1:(\d+)", said)
        assert admin, said
        assert stats, said
        yield Started(proc, said, f"http://127.0.0.1:{admin[1]}",
                      f"http://127.0.0.1:{stats[1]}", token_file)  # fmt: skip
    finally:
        _stop(proc)


def test_the_sidecar_names_its_token_file_which_only_its_user_can_read(sidecar: Started):
    assert f"tulle proxy: admin token file {sidecar.token_file}\n" in sidecar.said
    assert sidecar.token() not in sidecar.said  # the path is said, never the token
    assert stat.S_IMODE(sidecar.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(sidecar.token_file.parent.stat().st_mode) == 0o700
    assert len(sidecar.token()) >= 43  # 32 random bytes


def test_drain_and_quit_need_the_token_and_refuse_a_browser(sidecar: Started):
    admin = sidecar.admin
    missing = httpx.post(f"{admin}/drain", timeout=10)
    assert missing.status_code == 401
    assert str(sidecar.token_file) in missing.json()["error"]
    wrong = httpx.post(f"{admin}/quitquitquit", headers={"authorization": "Bearer guess"},
                       timeout=10)  # fmt: skip
    assert wrong.status_code == 401
    assert "not this sidecar's admin token" in wrong.json()["error"]
    right = {"authorization": f"Bearer {sidecar.token()}"}
    # A page whose DNS name was rebound to 127.0.0.1: its name is the Host.
    rebound = httpx.post(f"{admin}/drain", timeout=10,
                         headers={**right, "host": f"attacker.example:{admin.rsplit(':', 1)[1]}"})  # fmt: skip
    assert rebound.status_code == 403
    assert "DNS rebinding" in rebound.json()["error"]
    # A form on another site posting here (curl sends it as a browser would, with its Origin).
    form = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-H", "Origin: http://attacker.example",
         "-H", f"Authorization: Bearer {sidecar.token()}", "-d", "x=1", f"{admin}/quitquitquit"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert form.stdout.rsplit("\n", 1)[1] == "403", form.stdout
    assert "cross-origin" in form.stdout
    assert sidecar.proc.poll() is None
    assert httpx.get(f"{sidecar.stats}/ready", timeout=10).text != "DRAINING\n"  # nothing done

    drained = httpx.post(f"{admin}/drain", headers=right, timeout=10)
    assert drained.status_code == 200
    assert httpx.get(f"{sidecar.stats}/ready", timeout=10).text == "DRAINING\n"
    assert httpx.post(f"{admin}/quitquitquit", headers=right, timeout=10).status_code == 200
    assert sidecar.proc.wait(15) == 0
    assert not sidecar.token_file.exists()  # removed on the way out


def test_the_stats_listener_is_read_only(sidecar: Started):
    stats = sidecar.stats
    ready = httpx.get(f"{stats}/ready", timeout=10)
    assert (ready.status_code, ready.text) == (503, "waiting for config from the control plane\n")
    metrics = httpx.get(f"{stats}/stats/prometheus", timeout=10)
    assert metrics.status_code == 200
    assert "# TYPE tulle_requests_total counter" in metrics.text
    right = {"authorization": f"Bearer {sidecar.token()}"}
    for path in ("/drain", "/quitquitquit"):
        refused = httpx.post(f"{stats}{path}", headers=right, timeout=10)
        assert refused.status_code == 405, path
        assert refused.headers["allow"] == "GET"
    for path in ("/config_dump", "/clusters"):
        assert httpx.get(f"{stats}{path}", timeout=10).status_code == 404, path
    assert sidecar.proc.poll() is None
