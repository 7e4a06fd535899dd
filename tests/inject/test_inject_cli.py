"""``tulle inject`` (the real command) on the shop's Kubernetes manifests
(examples/shop/kubernetes/): every document it prints passes kubernetes-validate --strict for
Kubernetes 1.29 and 1.37, with and without native sidecars; its output injected again is the
same; Services and ServiceAccounts come out as they went in; the library-mode cart gets no
sidecar; the JSON Patch the webhook would answer turns each input document into the printed
one. Warnings on stderr name the file, line and object; bad input is an error naming the
document and field, and nothing is printed."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import jsonpatch
import pytest
import yaml

from tests.e2e.conftest import BIN
from tests.inject.kinds import validate
from tulle.inject import MeshSettings, inject, json_patch

SHOP = Path(__file__).parent.parent.parent / "examples" / "shop" / "kubernetes"


def tulle_inject(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "tulle"), "inject", *args], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


def shop_text() -> str:
    return "".join(path.read_text() for path in sorted(SHOP.glob("*.yaml")))


def shop_documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(shop_text()) if doc is not None]


@pytest.fixture(scope="module", params=["true", "false"], ids=["native", "legacy"])
def printed(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    result = tulle_inject("-f", "-", f"--native-sidecar={request.param}", stdin=shop_text())
    assert (result.returncode, result.stderr) == (0, "")
    return request.param, list(yaml.safe_load_all(result.stdout))


def test_the_shop_injected_is_valid_for_kubernetes_1_29_and_1_37(
    printed: tuple[str, list[dict[str, Any]]],
) -> None:
    _, documents = printed
    assert len(documents) == len(shop_documents()) == 18  # 5 accounts, 7 Deployments, 6 Services
    for document in documents:
        validate(document)


def test_the_shop_injected_has_a_sidecar_per_deployment_but_cart(
    printed: tuple[str, list[dict[str, Any]]],
) -> None:
    native, documents = printed
    where = "initContainers" if native == "true" else "containers"
    for before, after in zip(shop_documents(), documents, strict=True):
        if before["kind"] != "Deployment":
            assert after == before  # Services, ServiceAccounts: untouched
            continue
        spec = after["spec"]["template"]["spec"]
        names = [c["name"] for c in spec.get(where, [])]
        if before["metadata"]["name"] == "cart":  # library mode
            assert "tulle-proxy" not in names
            assert "TULLE_XDS_ADDRESS" in {e["name"] for e in spec["containers"][0]["env"]}
        else:
            assert "tulle-proxy" in names, before["metadata"]["name"]


def test_injecting_the_output_again_changes_nothing(
    printed: tuple[str, list[dict[str, Any]]],
) -> None:
    native, documents = printed
    again = tulle_inject("-f", "-", f"--native-sidecar={native}",
                         stdin=yaml.safe_dump_all(documents, sort_keys=False))  # fmt: skip
    assert (again.returncode, again.stderr) == (0, "")
    assert list(yaml.safe_load_all(again.stdout)) == documents


def test_the_webhooks_patch_gives_what_the_command_prints(
    printed: tuple[str, list[dict[str, Any]]],
) -> None:
    native, documents = printed
    mesh = MeshSettings(native_sidecar=native == "true")
    for before, after in zip(shop_documents(), documents, strict=True):
        patch = json_patch(before, inject(before, mesh).object)
        assert jsonpatch.apply_patch(before, patch) == after


def test_output_file_and_warnings(tmp_path: Path) -> None:
    source = tmp_path / "web.yaml"
    source.write_text(
        (SHOP / "catalog-cache.yaml")
        .read_text()
        .replace(
            "      labels: {app: catalog-cache}\n",
            "      labels: {app: catalog-cache}\n"
            "      annotations: {sidecar.istio.io/statsInclusionPrefixes: cluster}\n",
        )
    )
    out = tmp_path / "out" / "injected.yaml"
    out.parent.mkdir()
    result = tulle_inject("-f", str(source), "-o", str(out), "--image", "registry.example/t:1")
    assert (result.returncode, result.stdout) == (0, "")
    assert result.stderr == (
        f"warning: {source}:6 (document 1): Deployment catalog-cache: annotation "
        "sidecar.istio.io/statsInclusionPrefixes ignored: not supported (Envoy's stats)\n"
    )
    deployment = next(yaml.safe_load_all(out.read_text()))
    init = deployment["spec"]["template"]["spec"]["initContainers"]
    assert [c["image"] for c in init] == ["registry.example/t:1"] * 2


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("kind: Service\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n"
         "  containers: []\n",
         "error: {file}:7 (document 2, Pod p): spec.containers: a pod needs at least one "
         "container"),
        ("apiVersion: v1\nkind: Pod\nmetadata: {name: [\n",
         "error: {file}:4: YAML syntax error: expected the node content, but found "
         "'<stream end>' (while parsing a flow node on line 4)"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d, namespace: n}\n"
         "spec:\n  template:\n    metadata:\n      annotations:\n"
         "        traffic.sidecar.istio.io/excludeInboundPorts: '80,x'\n"
         "    spec: {containers: [{name: a}]}\n",
         "error: {file}:8 (document 1, Deployment n/d): spec.template.metadata.annotations."
         "traffic.sidecar.istio.io/excludeInboundPorts: 'x' is not a port (1-65535)"),
    ],
)  # fmt: skip
def test_bad_input_names_the_document_and_field(tmp_path: Path, text: str, error: str) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text(text)
    result = tulle_inject("-f", str(source))
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.strip() == error.format(file=source)


def test_bad_options() -> None:
    result = tulle_inject("-f", "-", "--set", "health_port=15000", stdin="")
    assert (result.returncode, result.stderr.strip()) == (
        2, "error: --set: health_port: 15000 is also admin_port"
    )  # fmt: skip
    result = tulle_inject("-f", "-", "--native-sidecar=maybe", stdin="")
    assert (result.returncode, result.stderr.strip()) == (
        2, "error: --native-sidecar: native_sidecar: 'maybe' is not true or false"
    )  # fmt: skip
