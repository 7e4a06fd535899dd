"""The whole upstream corpus (../shared/corpus/: Istio's and the Gateway API's own files), each
file validated on its own: what is out of this issue's scope gets one precise finding that says
it is not supported yet, never a "did you mean"; a parentRef without ``kind`` is never read as a
Service; an Istio kind Tulle ignores is one WARNING. The corpus must be there: a missing corpus
fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tulle.api import Severity, validate_paths
from tulle.api.findings import Finding

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus"
FILES = sorted([*CORPUS.rglob("*.yaml"), *CORPUS.rglob("*.yml")])

# Fields at the mesh's edges: their findings say "not supported yet".
EDGE_FIELDS = ("gateways", "tls", "requestPrincipals", "notRequestPrincipals", "action")
EDGE_KINDS = {"Gateway", "GatewayClass", "TLSRoute", "TCPRoute", "RequestAuthentication"}


@pytest.fixture(scope="module")
def findings() -> dict[Path, tuple[Finding, ...]]:
    assert len(FILES) >= 190, f"{CORPUS} is missing or incomplete: the corpus lives in ../shared"
    return {path: validate_paths([path]).findings for path in FILES}


def test_an_undefined_host_of_a_file_alone_is_a_warning_and_strict_hosts_an_error(
    findings: dict[Path, tuple[Finding, ...]],
):
    """No upstream file holds a Workload: a host none of it defines would be a Kubernetes
    Service elsewhere, a WARNING; ``--strict-hosts`` turns exactly those findings (and subsets
    with no DestinationRule in the file) into the ERRORs they were, and nothing else changes."""
    warned = 0
    for path, found in findings.items():
        elsewhere = [f for f in found if "must exist elsewhere" in f.message]
        warned += bool(elsewhere)
        assert all(f.severity is Severity.WARNING for f in elsewhere)
        assert not any(
            f.severity is Severity.ERROR and "is not defined by any Workload" in f.message
            for f in found
        ), path
        strict = validate_paths([path], strict_hosts=True).findings
        key = lambda f: (f.line, f.kind, f.namespace, f.name, f.field)  # noqa: E731
        assert sorted(map(key, strict)) == sorted(map(key, found)), path
        assert [f for f in strict if key(f) not in set(map(key, elsewhere))] == [
            f for f in found if f not in elsewhere
        ], path
        assert {key(f) for f in strict if f.severity is Severity.ERROR} >= set(
            map(key, elsewhere)
        ), path
    assert warned >= 52  # 50 of them failed alone only for it (an ERROR until then)
    passing = sum(
        not any(f.severity is Severity.ERROR for f in found) for found in findings.values()
    )
    # of 192 files alone with no ERROR (93 while an undefined host was an ERROR); the other 38
    # hold only config at the mesh's edges or the corpus's own mistakes (test_corpus_outcomes)
    assert passing >= 154


def test_edges_get_one_precise_finding(findings: dict[Path, tuple[Finding, ...]]):
    seen = 0
    for path, found in findings.items():
        for finding in found:
            assert "did you mean" not in finding.message or not finding.field.endswith(
                EDGE_FIELDS
            ), finding.format()
            if finding.kind in EDGE_KINDS and finding.field == "kind":
                seen += 1
                assert finding.severity is Severity.ERROR
                assert "is not supported yet" in finding.message, finding.format()
                assert "a later issue" in finding.message
        kinds = [f for f in found if f.field == "kind" and f.kind in EDGE_KINDS]
        names = {(f.kind, f.namespace, f.name) for f in kinds}
        assert len(kinds) == len(names), f"{path}: more than one finding for one resource"
    assert seen >= 19  # Istio's and the Gateway API's Gateways, GatewayClasses, ...


def test_a_parent_ref_without_kind_is_never_read_as_a_service(
    findings: dict[Path, tuple[Finding, ...]],
):
    gateway_parents = 0
    for path, found in findings.items():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if not isinstance(document, dict) or document.get("kind") != "HTTPRoute":
                continue
            name = document["metadata"]["name"]
            parents = document.get("spec", {}).get("parentRefs", [])
            for index, parent in enumerate(parents):
                if "kind" in parent:
                    continue
                gateway_parents += 1
                about = [
                    f
                    for f in found
                    if f.name == name and f.field.startswith(f"spec.parentRefs[{index}]")
                ]
                assert [f.message.split(" (")[0] for f in about] == [
                    f"attaching to Gateway {parent['name']!r}"
                ], (path, [f.format() for f in about])
    assert gateway_parents >= 40


def test_ignored_istio_kinds_are_one_warning_each(tmp_path: Path):
    text = "".join(
        f"apiVersion: {group}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n---\n"
        for group, kind in (
            ("networking.istio.io/v1alpha3", "EnvoyFilter"),
            ("networking.istio.io/v1", "Sidecar"),
            ("networking.istio.io/v1", "WorkloadEntry"),
            ("networking.istio.io/v1", "WorkloadGroup"),
            ("networking.istio.io/v1beta1", "ProxyConfig"),
            ("telemetry.istio.io/v1", "Telemetry"),
            ("extensions.istio.io/v1alpha1", "WasmPlugin"),
        )
    )
    path = tmp_path / "ignored.yaml"
    path.write_text(text)
    result = validate_paths([path])
    assert result.ok
    assert [(f.severity, f.kind) for f in result.findings] == [
        (Severity.WARNING, kind)
        for kind in (
            "EnvoyFilter", "Sidecar", "WorkloadEntry", "WorkloadGroup", "ProxyConfig",
            "Telemetry", "WasmPlugin",
        )
    ]  # fmt: skip
    assert all(
        f.message.startswith(f"{f.kind} is ignored: Tulle does not implement it")
        for f in result.findings
    )
