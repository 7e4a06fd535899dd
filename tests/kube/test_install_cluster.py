"""tulle install and uninstall against KMock, with the real kubectl: the YAML applies with
kubectl, apply mode creates every object, waits for the control plane's Deployment (whose
status the test writes: KMock runs no controllers) and reports it ready; uninstall removes
what install created and nothing else."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
from pathlib import Path

from tests.kube.kmock_server import KubeApi, write_kubeconfig
from tulle.kube.install import render, values_for

TULLE = str(Path(sys.executable).parent / "tulle")


def tulle(kube_api: KubeApi, *args: str, expect: int = 0) -> str:
    """Run a tulle command in this process (faster than a new one) against KMock; its output."""
    from typer.testing import CliRunner

    from tulle.cli.main import app

    result = CliRunner().invoke(app, [*args, "--kubeconfig", str(kube_api.kubeconfig)])
    assert result.exit_code == expect, result.output
    return result.output


def run(
    env, *args: str, stdin: str | None = None, expect: int = 0
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        list(args), check=False, input=stdin, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == expect, f"{args}: {result.stdout}\n{result.stderr}"
    return result


def kubectl_json(env, *args: str) -> dict:
    return json.loads(run(env, "kubectl", *args, "-o", "json").stdout)


def names(env, *args: str) -> set[str]:
    return {item["metadata"]["name"] for item in kubectl_json(env, "get", *args)["items"]}


def test_install_yaml_applies_with_kubectl(kube_env, kube_api: KubeApi):
    manifests = run(kube_env, TULLE, "install", "-o", "yaml", "--namespace", "tulle-kubectl").stdout
    applied = run(
        kube_env, "kubectl", "apply", "--validate=false", "-f", "-", stdin=manifests
    ).stdout
    expected = render(values_for("default", "tulle-kubectl"))
    assert len(applied.splitlines()) == len(expected)
    assert "namespace/tulle-kubectl created" in applied
    assert "deployment.apps/tulle-controlplane created" in applied
    assert (
        "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io"
        in applied
    )
    assert (
        "mutatingwebhookconfiguration.admissionregistration.k8s.io/tulle-sidecar-injector-tulle-kubectl created"
        in applied
    )
    deployment = kubectl_json(
        kube_env, "get", "deployment", "tulle-controlplane", "-n", "tulle-kubectl"
    )
    assert deployment["spec"]["replicas"] == 2
    # The CRDs made their kinds known: kubectl can list VirtualServices by their short name.
    assert kubectl_json(kube_env, "get", "vs", "-A")["items"] == []
    tulle(kube_api, "uninstall", "--namespace", "tulle-kubectl")
    assert "tulle-kubectl" not in names(kube_env, "namespaces")
    assert kube_api.objects("rbac.authorization.k8s.io/v1/clusterroles") == []


def test_dry_run_changes_nothing(kube_api: KubeApi):
    out = tulle(
        kube_api, "install", "--dry-run", "--profile", "minimal", "--namespace", "tulle-dry"
    )
    assert "- would create Namespace tulle-dry" in out
    assert "- would create Deployment tulle-dry/tulle-controlplane" in out
    assert "tulle-dry" not in {ns["metadata"]["name"] for ns in kube_api.objects("v1/namespaces")}
    assert kube_api.objects("apps/v1/deployments", "tulle-dry") == []


def test_an_unreachable_cluster_is_an_error_naming_it(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = tmp_path / "config"
    write_kubeconfig(config, f"http://127.0.0.1:{port}", "gone")
    gone = KubeApi(f"http://127.0.0.1:{port}", config, None, None)  # type: ignore[arg-type]
    out = tulle(gone, "install", expect=1)
    assert "error: Namespace tulle-system: cannot reach the API server" in out
    out = tulle(gone, "install", "--context", "other", expect=1)
    assert "no context 'other' (its contexts: gone)" in out


def lines_of(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put("<eof>")

    threading.Thread(target=pump, daemon=True).start()
    return lines


def next_matching(lines: queue.Queue[str], text: str, seen: list[str]) -> str:
    while True:
        line = lines.get(timeout=120)
        seen.append(line)
        if text in line:
            return line
        assert line != "<eof>", f"{text!r} never printed:\n" + "\n".join(seen)


def test_install_applies_waits_for_the_control_plane_and_uninstall_removes_it(
    kube_env, kube_api: KubeApi
):
    namespace = "tulle-apply"
    seen: list[str] = []
    with subprocess.Popen(
        [TULLE, "install", "--namespace", namespace, "--timeout", "120"],
        env=kube_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            lines = lines_of(proc)
            next_matching(lines, "0/2 replicas available", seen)
            # Everything is there while it waits (read back with kubectl, one call).
            listed = kubectl_json(
                kube_env,
                "get",
                "clusterroles,validatingwebhookconfigurations,configmaps,poddisruptionbudgets,"
                "deployments",
                "-A",
                "-l",
                f"tulle.dev/install-namespace={namespace}",
            )["items"]
            found = {(o["kind"], o["metadata"]["name"]) for o in listed}
            assert found >= {
                ("ClusterRole", f"tulle-controlplane-{namespace}"),
                ("ValidatingWebhookConfiguration", f"tulle-validator-{namespace}"),
                ("ConfigMap", "tulle-mesh-config"),
                ("PodDisruptionBudget", "tulle-controlplane"),
                ("Deployment", "tulle-controlplane"),
            }, found
            # The Deployment controller's part, done by hand: one replica up, then both.
            for available in (1, 2):
                status = {
                    "observedGeneration": 1,
                    "replicas": 2,
                    "updatedReplicas": 2,
                    "availableReplicas": available,
                }
                run(
                    kube_env,
                    "kubectl",
                    "patch",
                    "deployment",
                    "tulle-controlplane",
                    "-n",
                    namespace,
                    "--subresource=status",
                    "--type=merge",
                    "-p",
                    json.dumps({"status": status}),
                )
                next_matching(lines, f"{available}/2 replicas available", seen)
            next_matching(lines, "✔ control plane ready: 2/2 replicas available", seen)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    applied = [line for line in seen if line.startswith("✔ applied ")]
    assert len(applied) == len(render(values_for("default", namespace)))

    # Objects that are not this install's: unlabelled, and another install's.
    other = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "app-config", "namespace": namespace},
    }
    foreign = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "elsewhere",
            "namespace": "default",
            "labels": {
                "app.kubernetes.io/managed-by": "tulle",
                "tulle.dev/install-namespace": "another",
            },
        },
    }
    # What the control plane publishes with the install's labels (the root certificate in an
    # app's namespace) goes with it.
    published = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "tulle-ca-root-cert",
            "namespace": "shop-of-tulle-apply",
            "labels": {
                "app.kubernetes.io/managed-by": "tulle",
                "tulle.dev/install-namespace": namespace,
            },
        },
    }
    for obj in (other, foreign, published):
        run(kube_env, "kubectl", "apply", "--validate=false", "-f", "-", stdin=json.dumps(obj))

    dry = tulle(kube_api, "uninstall", "--namespace", namespace, "--dry-run")
    assert f"- would delete MutatingWebhookConfiguration tulle-sidecar-injector-{namespace}" in dry
    assert len(kube_api.objects("apps/v1/deployments", namespace)) == 1

    out = tulle(kube_api, "uninstall", "--namespace", namespace)
    assert f"✔ deleted Namespace {namespace}" in out
    assert "kept the CRDs" in out
    assert kube_api.objects("admissionregistration.k8s.io/v1/mutatingwebhookconfigurations") == []
    assert kube_api.objects("apps/v1/deployments", namespace) == []
    assert kube_api.objects("v1/serviceaccounts", namespace) == []
    assert namespace not in names(kube_env, "namespaces")
    assert "virtualservices.networking.istio.io" in names(kube_env, "crds")
    assert [cm["metadata"]["name"] for cm in kube_api.objects("v1/configmaps", namespace)] == [
        "app-config"
    ]
    assert "elsewhere" in {
        cm["metadata"]["name"] for cm in kube_api.objects("v1/configmaps", "default")
    }
    assert kube_api.objects("v1/configmaps", "shop-of-tulle-apply") == []
    assert "✔ deleted ConfigMap shop-of-tulle-apply/tulle-ca-root-cert" in out

    purged = tulle(kube_api, "uninstall", "--namespace", namespace, "--purge")
    assert "✔ deleted CustomResourceDefinition meshes.tulle.dev" in purged
    assert not {n for n in names(kube_env, "crds") if n.endswith(("tulle.dev", "istio.io"))}


def test_uninstall_never_deletes_a_builtin_namespace(kube_env, kube_api: KubeApi):
    labelled = {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": "default",
            "labels": {
                "app.kubernetes.io/managed-by": "tulle",
                "tulle.dev/install-namespace": "default",
            },
        },
    }
    run(kube_env, "kubectl", "apply", "--validate=false", "-f", "-", stdin=json.dumps(labelled))
    out = tulle(kube_api, "uninstall", "--namespace", "default")
    assert "Namespace default" not in out
    assert "default" in names(kube_env, "namespaces")
