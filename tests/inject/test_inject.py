"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: every kind with a
pod template (and Lists) injected into manifests that Kubernetes 1.29 and 1.37 accept
(kubernetes-validate, strict), idempotent, with a JSON Patch that jsonpatch applies to the input
to give exactly the output; other documents untouched; opt-out, library mode, exclusions,
probes, annotations and errors. The injected commands parse with the real CLI."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import typer
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.inject.kinds import PASSING_THROUGH, objects, validate
from tulle.cli.main import app
from tulle.client.settings import Settings
from tulle.inject import InjectError, MeshSettings, inject, json_patch
from tulle.inject.objects import TEMPLATES
from tulle.inject.settings import SettingsError
from tulle.proxy.health import parse_probers
from tulle.xds.node import parse_node_id

NATIVE = MeshSettings()
LEGACY = MeshSettings(native_sidecar=False)


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    """The pod (metadata and spec) of ``obj``."""
    if obj["kind"] == "Pod":
        return obj
    node: Any = obj
    for step in TEMPLATES[obj["kind"]]:
        node = node[step]
    return node


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def env(c: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in c.get("env", [])}


def injected(obj: dict[str, Any], mesh: MeshSettings = NATIVE) -> dict[str, Any]:
    result = inject(obj, mesh)
    assert result.injected == 1
    return result.object


@pytest.mark.parametrize("mesh", [NATIVE, LEGACY], ids=["native", "legacy"])
@pytest.mark.parametrize("kind", list(objects()))
def test_every_kind_is_injected_valid_idempotent_and_patchable(
    kind: str, mesh: MeshSettings
) -> None:
    original = objects()[kind]
    kept = copy.deepcopy(original)
    validate(original)
    result = inject(original, mesh)
    assert result.injected == 1
    assert result.warnings == ()
    assert original == kept  # the input is not changed
    validate(result.object)
    again = inject(result.object, mesh)
    assert (again.object, again.injected, again.warnings) == (result.object, 0, ())
    patch = json_patch(original, result.object)
    assert jsonpatch.apply_patch(original, patch) == result.object
    assert json_patch(result.object, again.object) == []


def test_a_native_sidecar_is_an_init_container_the_app_waits_for() -> None:
    spec = pod_of(injected(objects()["Deployment"]))["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["tulle-init", "tulle-proxy", "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["web", "logger"]
    proxy = container(spec, "tulle-proxy")
    assert proxy["restartPolicy"] == "Always"
    assert proxy["startupProbe"]["httpGet"] == {"path": "/ready", "port": 15021, "scheme": "HTTP"}
    assert proxy["lifecycle"] == {"preStop": {"exec": {"command": [
        "tulle", "proxy-drain", "--admin-port", "15000",
        "--admin-token-file", "/var/run/tulle/proxy/admin-token"]}}}  # fmt: skip
    assert proxy["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_without_native_sidecars_the_proxy_is_the_first_container_and_holds_the_app() -> None:
    spec = pod_of(injected(objects()["Deployment"], LEGACY))["spec"]
    assert [c["name"] for c in spec["initContainers"]] == ["tulle-init", "migrate"]
    assert [c["name"] for c in spec["containers"]] == ["tulle-proxy", "web", "logger"]
    proxy = container(spec, "tulle-proxy")
    assert "restartPolicy" not in proxy
    assert "startupProbe" not in proxy
    assert proxy["lifecycle"] == {"postStart": {"exec": {"command": [
        "tulle", "proxy-wait", "--health-port", "15021", "--timeout", "600"]}}}  # fmt: skip


def test_only_the_init_container_is_root_with_net_admin_and_net_raw() -> None:
    original = objects()["Pod"]
    spec = injected(original)["spec"]
    init, proxy = container(spec, "tulle-init"), container(spec, "tulle-proxy")
    assert init["securityContext"]["capabilities"] == {"add": ["NET_ADMIN", "NET_RAW"],
                                                       "drop": ["ALL"]}  # fmt: skip
    assert (init["securityContext"]["runAsUser"], init["securityContext"]["runAsNonRoot"]) == (
        0,
        False,
    )
    assert init["securityContext"]["allowPrivilegeEscalation"] is False
    assert proxy["securityContext"] == {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
        "privileged": False, "readOnlyRootFilesystem": True, "runAsGroup": 1337,
        "runAsNonRoot": True, "runAsUser": 1337, "seccompProfile": {"type": "RuntimeDefault"},
    }  # fmt: skip
    roots = [c["name"] for c in spec["initContainers"] + spec["containers"]
             if c.get("securityContext", {}).get("runAsUser") == 0]  # fmt: skip
    assert roots == ["tulle-init"]
    for name in ("web", "logger", "migrate"):  # the app's containers keep their own
        assert "securityContext" not in container(spec, name)


def test_identity_root_certificate_and_pod_facts() -> None:
    pod = injected(objects()["Pod"])
    spec = pod["spec"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["tulle-token"]["projected"]["sources"] == [{"serviceAccountToken": {
        "audience": "tulle-ca", "expirationSeconds": 43200, "path": "tulle-token"}}]  # fmt: skip
    assert volumes["tulle-ca-root-cert"]["configMap"] == {"name": "tulle-ca-root-cert"}
    assert volumes["data"] == {"name": "data", "emptyDir": {}}  # the pod's own stays
    proxy = container(spec, "tulle-proxy")
    variables = env(proxy)
    assert variables["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert variables["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert variables["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert variables["SERVICE_ACCOUNT"] == {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}
    assert variables["NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    args = proxy["args"]
    node = args[args.index("--node-id") + 1]
    assert (
        node == "sidecar~$(POD_IP)~$(POD_NAME).$(POD_NAMESPACE)~$(POD_NAMESPACE).svc.cluster.local"
    )
    # as the kubelet expands it:
    parse_node_id(node.replace("$(POD_IP)", "10.1.2.3").replace("$(POD_NAME)", "web-1")
                  .replace("$(POD_NAMESPACE)", "shop"))  # fmt: skip
    mounts = {m["mountPath"]: m["name"] for m in proxy["volumeMounts"]}
    root = args[args.index("--xds-root-cert") + 1]
    token = args[args.index("--token-file") + 1]
    assert mounts[str(Path(root).parent)] == "tulle-ca-root-cert"
    assert mounts[str(Path(token).parent)] == "tulle-token"
    assert Path(token).name == "tulle-token"
    assert args[args.index("--xds") + 1] == "tulle-controlplane.tulle-system.svc:15012"
    assert {p["containerPort"] for p in proxy["ports"]} == {15020, 15021}
    assert pod["metadata"]["labels"]["security.istio.io/tlsMode"] == "istio"
    status = json.loads(pod["metadata"]["annotations"]["sidecar.tulle.dev/status"])
    assert status["initContainers"] == ["tulle-init", "tulle-proxy"]


def test_http_probes_go_through_the_health_port_and_the_sidecar_gets_the_originals() -> None:
    spec = injected(objects()["Pod"])["spec"]
    web = container(spec, "web")
    assert web["readinessProbe"] == {"httpGet": {"path": "/app-health/web/readyz", "port": 15021,
                                                 "scheme": "HTTP"}}  # fmt: skip
    assert web["livenessProbe"] == {"httpGet": {"path": "/app-health/web/livez", "port": 15021,
                                                "scheme": "HTTP"}, "timeoutSeconds": 3}  # fmt: skip
    assert web["startupProbe"] == {"tcpSocket": {"port": 8080}}  # not HTTP: left alone
    probers = json.loads(env(container(spec, "tulle-proxy"))["TULLE_APP_PROBERS"])
    assert probers == {
        "/app-health/web/readyz": {"httpGet": {"path": "/ready", "port": 8080,
                                               "scheme": "HTTP"}, "timeoutSeconds": 1},
        "/app-health/web/livez": {"httpGet": {"path": "/live", "port": 8080, "scheme": "HTTP",
                                              "httpHeaders": [{"name": "X-Probe", "value": "1"}]},
                                  "timeoutSeconds": 3},
    }  # fmt: skip
    # What the sidecar reads back (tulle proxy --app-probers / TULLE_APP_PROBERS):
    probes = parse_probers(env(container(spec, "tulle-proxy"))["TULLE_APP_PROBERS"])
    assert (probes["/app-health/web/livez"].port, probes["/app-health/web/livez"].headers) == (
        8080, (("X-Probe", "1"),))  # fmt: skip
    kept = injected(objects(**{"sidecar.istio.io/rewriteAppHTTPProbers": "false"})["Pod"])
    assert container(kept["spec"], "web")["readinessProbe"]["httpGet"]["port"] == "http"
    assert "TULLE_APP_PROBERS" not in env(container(kept["spec"], "tulle-proxy"))


def test_other_documents_pass_through_unchanged() -> None:
    for document in PASSING_THROUGH:
        result = inject(document, NATIVE)
        assert (result.object, result.injected, result.warnings) == (document, 0, ())
        assert json_patch(document, result.object) == []


def test_a_list_injects_its_items() -> None:
    items = [objects()["Deployment"], *PASSING_THROUGH, objects()["Pod"]]
    listed = {"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}
    result = inject(listed, NATIVE)
    assert result.injected == 2
    out = result.object["items"]
    assert out[1:4] == PASSING_THROUGH
    for item in out:
        validate(item)
    assert out[0] == injected(objects()["Deployment"])
    assert jsonpatch.apply_patch(listed, json_patch(listed, result.object)) == result.object
    assert inject(result.object, NATIVE).object == result.object


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


def init_args(obj: dict[str, Any]) -> list[str]:
    return container(pod_of(injected(obj))["spec"], "tulle-init")["args"]


def test_exclusions_from_interception_tulle_and_istio_spellings() -> None:
    args = init_args(objects(**{
        "traffic.sidecar.tulle.dev/excludeInboundPorts": "9000, 9001",
        "traffic.sidecar.istio.io/excludeInboundPorts": "9001,9002",
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/8,169.254.169.254/32,fd00::/8",
        "traffic.sidecar.istio.io/includeInboundPorts": "*",
        "traffic.sidecar.istio.io/includeOutboundIPRanges": "*",
    })["Deployment"])  # fmt: skip
    pairs = list(zip(args[1::2], args[2::2], strict=False))
    assert [v for k, v in pairs if k == "--exclude-inbound-port"] == [
        "15000", "15020", "15021", "9000", "9001", "9002"]  # fmt: skip
    assert [v for k, v in pairs if k == "--exclude-outbound-port"] == ["5432"]
    # only IPv4 is intercepted (iptables): an IPv6 range needs no exclusion
    assert [v for k, v in pairs if k == "--exclude-outbound-cidr"] == [
        "10.0.0.0/8", "169.254.169.254/32"]  # fmt: skip
    assert pairs[:4] == [("--outbound-port", "15001"), ("--inbound-port", "15006"),
                         ("--proxy-uid", "1337"), ("--mark", "")]  # fmt: skip


def test_not_applied_annotations_are_warnings_naming_the_object() -> None:
    result = inject(objects(**{
        "sidecar.istio.io/unheardOf": "1",
        "proxy.istio.io/config": "holdApplicationUntilProxyStarts: true",
        "traffic.sidecar.istio.io/includeInboundPorts": "8080",
        "sidecar.istio.io/interceptionMode": "TPROXY",
        "sidecar.tulle.dev/typo": "x",
        "example.com/other": "not ours",
    })["Deployment"], NATIVE)  # fmt: skip
    assert result.injected == 1
    assert sorted(result.warnings) == sorted([
        "Deployment shop/web: annotation sidecar.istio.io/unheardOf ignored: Tulle does not know it",
        "Deployment shop/web: annotation proxy.istio.io/config ignored: not supported: ProxyConfig "
        "is Envoy's; the sidecar always holds the app until it is ready "
        "(holdApplicationUntilProxyStarts)",
        "Deployment shop/web: annotation traffic.sidecar.istio.io/includeInboundPorts: '8080' not "
        "applied: only '*' (every inbound port but the excluded ones is intercepted)",
        "Deployment shop/web: annotation sidecar.istio.io/interceptionMode: 'TPROXY' not applied: "
        "only REDIRECT (tulle iptables has no TPROXY mode)",
        "Deployment shop/web: annotation sidecar.tulle.dev/typo ignored: Tulle does not know it",
    ])  # fmt: skip


def test_applied_istio_annotations() -> None:
    spec = pod_of(injected(objects(**{
        "sidecar.istio.io/proxyImage": "registry.example/tulle:9",
        "sidecar.istio.io/proxyCPU": "50m", "sidecar.istio.io/proxyMemoryLimit": "300Mi",
        "sidecar.istio.io/logLevel": "trace", "sidecar.istio.io/nativeSidecar": "false",
        "sidecar.istio.io/discoveryAddress": "cp.example:15012",
    })["Deployment"]))["spec"]  # fmt: skip
    proxy = container(spec, "tulle-proxy")
    assert proxy in spec["containers"]  # nativeSidecar false
    assert proxy["image"] == container(spec, "tulle-init")["image"] == "registry.example/tulle:9"
    assert proxy["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                                  "limits": {"memory": "300Mi"}}  # fmt: skip
    args = proxy["args"]
    assert args[args.index("--log-level") + 1] == "debug"
    assert args[args.index("--xds") + 1] == "cp.example:15012"


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


@pytest.mark.parametrize("mesh", [NATIVE, LEGACY], ids=["native", "legacy"])
def test_the_injected_commands_parse_with_the_real_cli(mesh: MeshSettings) -> None:
    """Every tulle command the pod runs (containers and hooks) is one the CLI takes, with
    options it knows."""
    group = typer.main.get_command(app)
    spec = pod_of(injected(objects(**{
        "traffic.sidecar.istio.io/excludeOutboundPorts": "5432",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.0.0.0/8",
        "traffic.sidecar.istio.io/excludeInboundPorts": "9000"})["Deployment"], mesh))["spec"]  # fmt: skip
    commands = []
    for name in ("tulle-init", "tulle-proxy"):
        c = container(spec, name)
        assert c["command"] == ["tulle"]
        commands.append(c["args"])
        for hook in c.get("lifecycle", {}).values():
            assert hook["exec"]["command"][0] == "tulle"
            commands.append(hook["exec"]["command"][1:])
    assert {args[0] for args in commands} == {
        "iptables", "proxy", "proxy-drain" if mesh.native_sidecar else "proxy-wait"}  # fmt: skip
    for args in commands:
        command = group.commands[args[0]]  # type: ignore[attr-defined]
        context = command.make_context(args[0], list(args[1:]))
        assert context.params, args
        if args[0] == "proxy":
            assert context.params["health_port"] == 15021
            assert context.params["health_host"] == "0.0.0.0"
            assert context.params["mark"] == ""  # no SO_MARK: no CAP_NET_ADMIN; excluded by uid
        if args[0] == "iptables":
            assert context.params["exclude_inbound_port"] == [15000, 15020, 15021, 9000]
            assert context.params["exclude_outbound_cidr"] == ["10.0.0.0/8"]
            assert context.params["proxy_uid"] == 1337


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


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from(["", "a", "a/b", "~0", "~1/"]),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["a", "b", "a/b", "~", "c~1"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(JSON, JSON)
def test_json_patch_turns_one_document_into_the_other(before: Any, after: Any) -> None:
    patch = json_patch(before, after)
    assert jsonpatch.apply_patch(copy.deepcopy(before), patch) == after
    assert json.loads(json.dumps(patch)) == patch  # plain JSON, as the webhook sends it


def test_json_patch_operations() -> None:
    before = {"a/b": [1, 2, 3], "t~": True, "gone": 1, "list": [{"x": 1}, {"y": 2}]}
    after = {"a/b": [0, 1, 2, 3], "t~": 1, "new": {"k": "v"}, "list": [{"y": 2}]}
    assert json_patch(before, after) == [
        {"op": "remove", "path": "/gone"},
        {"op": "add", "path": "/a~1b/0", "value": 0},
        {"op": "replace", "path": "/t~0", "value": 1},  # True is not 1 in JSON
        {"op": "add", "path": "/new", "value": {"k": "v"}},
        {"op": "remove", "path": "/list/0"},
    ]
    assert json_patch([1, 2], [3]) == [{"op": "replace", "path": "", "value": [3]}]


def test_the_docs_list_every_annotation() -> None:
    from tulle.inject.annotations import ISTIO_ANNOTATIONS, TULLE_ANNOTATIONS

    docs = (Path(__file__).parent.parent.parent / "docs" / "kubernetes.md").read_text()
    for name in [*ISTIO_ANNOTATIONS, *TULLE_ANNOTATIONS]:
        if name.startswith("sidecar.tulle.dev/proxy") and name != "sidecar.tulle.dev/proxyImage":
            assert name.removeprefix("sidecar.tulle.dev/") in docs, name  # one row for four
        else:
            assert f"| `{name}`" in docs, name


def admitted_pod(deployment: dict[str, Any]) -> dict[str, Any]:
    """The Pod a Deployment's ReplicaSet creates, as the API server hands it to a mutating
    webhook: a generated name, no namespace yet on the object, an owner, defaults filled in."""
    tpl = copy.deepcopy(deployment["spec"]["template"])
    spec = tpl["spec"]
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    for c in spec["containers"]:
        c.setdefault("imagePullPolicy", "IfNotPresent")
        c.setdefault("terminationMessagePath", "/dev/termination-log")
    metadata = {**tpl["metadata"], "generateName": "web-5d8f9c7b-",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web-5d8f9c7b", "uid": "1234", "controller": True}]}  # fmt: skip
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def test_the_webhook_path_gives_the_pod_tulle_inject_gives_the_template() -> None:
    deployment = objects()["Deployment"]
    by_command = injected(deployment)
    # A pod of the injected Deployment passes the webhook unchanged: an empty patch.
    pod = admitted_pod(by_command)
    assert json_patch(pod, inject(pod, NATIVE).object) == []
    # A pod of the plain Deployment gets a patch that makes it the injected template's pod.
    plain = admitted_pod(deployment)
    patch = json_patch(plain, inject(plain, NATIVE).object)
    assert jsonpatch.apply_patch(plain, patch) == admitted_pod(by_command)
    validate(jsonpatch.apply_patch(plain, patch))
