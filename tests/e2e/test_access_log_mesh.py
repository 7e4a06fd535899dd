"""The Mesh's ``accessLog`` reaches a running sidecar: a real control plane, ``tulle proxy`` and
its stdout. JSON lines by default; ``format: TEXT`` turns them into Envoy-style text lines, and
``enabled: false`` stops them, each as soon as the sidecar has the config."""

from __future__ import annotations

import json
from pathlib import Path

from tests.e2e.conftest import ControlPlane, Processes, register, synced, wait_until
from tests.e2e.sidecar_http import WEB

MESH = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {{name: mesh, namespace: tulle-system}}
spec: {{accessLog: {{enabled: {enabled}, format: {format}}}}}
"""


def _lines(log: Path) -> list[str]:
    text = log.read_text()
    return text[: text.rfind("\n") + 1].splitlines()


def test_the_mesh_turns_the_sidecars_access_log_to_text_and_off(
    control_plane: ControlPlane, processes: Processes, tmp_path: Path
) -> None:
    register(control_plane, processes, a={})
    log = tmp_path / "access.log"
    sidecar = processes.sidecar(control_plane, log=log)

    def mesh(enabled: str, format_: str) -> None:
        control_plane.apply(MESH.format(enabled=enabled, format=format_))
        wait_until(lambda: synced(control_plane, sidecar.node), timeout=30)

    def logged(path: str) -> list[str]:
        return [line for line in _lines(log) if path in line]

    with sidecar.client() as client:
        assert client.get(f"{WEB}/json").status_code == 200
        wait_until(lambda: logged("/json"), timeout=30)
        assert json.loads(logged("/json")[0])["path"] == "/json"

        mesh("true", "TEXT")
        forging = {"x-request-id": 'r" 200 "1'}
        assert client.get(f"{WEB}/text?q=%22x%22", headers=forging).status_code == 200
        wait_until(lambda: logged("/text"), timeout=30)
        (line,) = logged("/text")
        assert line.startswith("["), line
        assert '"GET /text?q=%22x%22" 200 - "-" ' in line, line
        assert '"r\\" 200 \\"1"' in line  # request text is quoted and escaped: no forged field
        assert '"outbound|8080||web.default.svc.cluster.local"' in line, line

        mesh("false", "JSON")
        assert client.get(f"{WEB}/off").status_code == 200
        mesh("true", "JSON")  # written out before the change: what was kept while off
        assert client.get(f"{WEB}/on-again").status_code == 200
        wait_until(lambda: logged("/on-again"), timeout=30)
    assert not logged("/off")
    assert json.loads(logged("/on-again")[0])["status"] == 200
