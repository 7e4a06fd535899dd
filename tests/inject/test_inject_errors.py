"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: errors name the field, a
container running as the sidecar's user is a warning, and the mesh settings are checked."""

from __future__ import annotations

from typing import Any

import pytest

from tests.inject.injected import (
    NATIVE,
    container,
    injected,
    pod_of,
)
from tests.inject.kinds import objects
from tulle.inject import InjectError, MeshSettings, inject
from tulle.inject.settings import SettingsError


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": []}},
         "spec.containers: a pod needs at least one container"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}},
         "spec: missing or not a mapping (a pod spec)"),
        ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {}},
         "spec.template: missing or not a mapping"),
        ({"apiVersion": "batch/v1", "kind": "CronJob", "spec": {"jobTemplate": {"spec": {}}}},
         "spec.jobTemplate.spec.template: missing or not a mapping"),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"image": "x"}]}},
         "spec.containers[0].name: missing"),
        ({"apiVersion": "v1", "kind": "List", "items": [{"kind": "Service"}, "text"]},
         "items[1]: not a Kubernetes object (a mapping with apiVersion and kind)"),
        ({"apiVersion": "v1", "metadata": {}}, "kind: missing"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {
            "traffic.sidecar.istio.io/excludeOutboundPorts": "5432,http"}},
          "spec": {"containers": [{"name": "a"}]}},
         "metadata.annotations.traffic.sidecar.istio.io/excludeOutboundPorts: 'http' is not a "
         "port (1-65535)"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/33"}},
          "spec": {"containers": [{"name": "a"}]}},
         "metadata.annotations.traffic.sidecar.istio.io/excludeOutboundIPRanges: '10.0.0.0/33' "
         "is not an address range (e.g. 10.0.0.0/8)"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {
            "sidecar.istio.io/inject": False}}, "spec": {"containers": [{"name": "a"}]}},
         "metadata.annotations.sidecar.istio.io/inject: False is not a string (quote it: "
         "Kubernetes takes only strings here)"),
        ({"apiVersion": "v1", "kind": "Pod", "metadata": {"annotations": {
            "tulle.dev/mesh": "ambient"}}, "spec": {"containers": [{"name": "a"}]}},
         "metadata.annotations.tulle.dev/mesh: 'ambient' is not 'sidecar' or 'library'"),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a",
            "readinessProbe": {"httpGet": {"path": "/", "port": "web"}}}]}},
         "spec.containers[0].readinessProbe.httpGet.port: no port named 'web' in the "
         "container's ports"),
        ({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": "a"}],
            "volumes": [{"name": "tulle-token", "emptyDir": {}}]}},
         "spec.volumes: a volume is already named 'tulle-token'"),
    ],
)  # fmt: skip
def test_errors_name_the_field(obj: dict[str, Any], message: str) -> None:
    with pytest.raises(InjectError) as raised:
        inject(obj, NATIVE)
    assert str(raised.value) == message


def test_a_container_that_runs_as_the_sidecars_user_is_a_warning() -> None:
    pod = objects()["Pod"]
    pod["spec"]["securityContext"] = {"runAsUser": 1337}
    result = inject(pod, NATIVE)
    assert result.warnings == tuple(
        f"Pod shop/web: container {name} runs as uid 1337, the sidecar's: its traffic bypasses "
        "the sidecar" for name in ("web", "logger"))  # fmt: skip


def test_mesh_settings() -> None:
    changed = MeshSettings().replace({"proxy-uid": "2000", "native_sidecar": "false",
                                      "drain_seconds": "7.5"})  # fmt: skip
    assert (changed.proxy_uid, changed.native_sidecar, changed.drain_seconds) == (2000, False, 7.5)
    for wrong, message in [
        (lambda: MeshSettings().replace({"proxy_uid": "x"}), "proxy_uid: 'x' is not a number"),
        (lambda: MeshSettings(health_port=15020).check(), "health_port: 15020 is also stats_port"),
        (lambda: MeshSettings(proxy_uid=0).check(),
         "proxy_uid: 0 is root; the sidecar runs as a non-root user"),
    ]:  # fmt: skip
        with pytest.raises(SettingsError) as raised:
            wrong()
        assert str(raised.value) == message
    with pytest.raises(SettingsError) as unknown:
        MeshSettings().replace({"colour": "red"})
    assert str(unknown.value).startswith("colour: no such setting (one of admin_port, ")
    spec = pod_of(injected(objects()["Deployment"], MeshSettings(health_port=16021)))["spec"]
    assert container(spec, "web")["readinessProbe"]["httpGet"]["port"] == 16021
    assert "16021" in container(spec, "tulle-init")["args"]  # not redirected
