"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: which pods, and how.
Opting out and in, pods left alone with a warning (injected by Istio, host network), and library
mode (what tulle.client reads, no sidecar)."""

from __future__ import annotations

from pathlib import Path

import jsonpatch
import pytest

from tests.inject.injected import (
    NATIVE,
    container,
    env,
    pod_of,
)
from tests.inject.kinds import objects, validate
from tulle.client.settings import Settings
from tulle.inject import InjectError, inject, json_patch
from tulle.xds.node import parse_node_id


@pytest.mark.parametrize(
    ("where", "key", "value"),
    [
        ("annotations", "sidecar.tulle.dev/inject", "false"),
        ("annotations", "sidecar.istio.io/inject", "false"),
        ("labels", "sidecar.istio.io/inject", "false"),
        ("labels", "sidecar.tulle.dev/inject", "n"),
    ],
)
def test_opting_out(where: str, key: str, value: str) -> None:
    for kind, obj in objects().items():
        pod_of(obj)["metadata"].setdefault(where, {})[key] = value
        result = inject(obj, NATIVE)
        assert (result.object, result.injected, result.warnings) == (obj, 0, ()), kind


def test_opting_in_and_a_bad_value() -> None:
    assert inject(objects(**{"sidecar.istio.io/inject": "true"})["Pod"], NATIVE).injected == 1
    with pytest.raises(InjectError) as raised:
        inject(objects(**{"sidecar.tulle.dev/inject": "maybe"})["Deployment"], NATIVE)
    assert str(raised.value) == (
        "spec.template.metadata.annotations.sidecar.tulle.dev/inject: 'maybe' is not true or false"
    )


def test_a_pod_injected_by_istio_is_left_alone_with_a_warning() -> None:
    pod = objects(**{"sidecar.istio.io/status": '{"containers":["istio-proxy"]}'})["Pod"]
    result = inject(pod, NATIVE)
    assert (result.object, result.injected) == (pod, 0)
    assert result.warnings == (
        "Pod shop/web: not injected: already injected by Istio (sidecar.istio.io/status)",
    )


def test_host_network_pods_are_left_alone_with_a_warning() -> None:
    pod = objects()["Pod"]
    pod["spec"]["hostNetwork"] = True
    result = inject(pod, NATIVE)
    assert (result.object, result.injected) == (pod, 0)
    assert result.warnings == (
        "Pod shop/web: not injected: it uses the host's network (spec.hostNetwork)",
    )


def test_library_mode_injects_what_tulle_client_reads_and_no_sidecar(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for obj in objects(**{"tulle.dev/mesh": "library"}).values():
        result = inject(obj, NATIVE)
        validate(result.object)
        assert jsonpatch.apply_patch(obj, json_patch(obj, result.object)) == result.object
        assert inject(result.object, NATIVE).object == result.object
    spec = pod_of(result.object)["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["migrate"]
    assert [c["name"] for c in spec["containers"]] == ["web", "logger"]
    assert "security.istio.io/tlsMode" not in pod_of(result.object)["metadata"]["labels"]
    web = container(spec, "web")
    assert web["readinessProbe"]["httpGet"]["port"] == "http"  # no sidecar: probes as they were
    variables = env(web)
    assert variables["PORT"] == "8080"  # the app's own first
    # What tulle.client reads, as the kubelet would set it (the files where the volumes are):
    root, token = tmp_path / "root-cert.pem", tmp_path / "token"
    root.write_text("root")
    token.write_text("token")
    token.chmod(0o600)
    facts = {"$(POD_IP)": "10.1.2.3", "$(POD_NAME)": "web-1", "$(POD_NAMESPACE)": "shop"}
    for name, value in variables.items():
        if isinstance(value, str):
            text = value
            for fact, real in facts.items():
                text = text.replace(fact, real)
            monkeypatch.setenv(name, text)
    assert variables["TULLE_XDS_ROOT_CERT"] == "/var/run/secrets/tulle/ca/root-cert.pem"
    assert variables["TULLE_TOKEN_FILE"] == "/var/run/secrets/tulle/tokens/tulle-token"
    mounts = {m["mountPath"]: m["name"] for m in web["volumeMounts"]}
    assert mounts == {"/data": "data", "/var/run/secrets/tulle/tokens": "tulle-token",
                      "/var/run/secrets/tulle/ca": "tulle-ca-root-cert"}  # fmt: skip
    monkeypatch.setenv("TULLE_XDS_ROOT_CERT", str(root))
    monkeypatch.setenv("TULLE_TOKEN_FILE", str(token))
    loaded = Settings.load()
    assert loaded.xds_address == "tulle-controlplane.tulle-system.svc:15012"
    assert parse_node_id(loaded.node_id).mode == "library"
    assert (parse_node_id(loaded.node_id).pod, parse_node_id(loaded.node_id).namespace) == (
        "web-1", "shop")  # fmt: skip
