"""tulle.inject, the pure function behind ``tulle inject`` and the webhook: the injected pod. The
sidecar native (an init container the app waits for) or not (the first container, holding the
app), only the init container privileged, identity and pod facts, probes through the health port,
and injected commands that parse with the real CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer

from tests.inject.injected import (
    LEGACY,
    NATIVE,
    container,
    env,
    injected,
    pod_of,
)
from tests.inject.kinds import objects
from tulle.cli.main import app
from tulle.inject import MeshSettings
from tulle.proxy.health import parse_probers
from tulle.xds.node import parse_node_id


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
