"""The same resource defined twice in the config read together: the later definition replaces
the earlier, as ``kubectl apply -f`` applies a directory's documents in turn, with one WARNING
at the earlier one naming where it is defined again.

Files that hold alternatives (Istio's samples define one Service in two files, its validation
testdata one DestinationRule several times) then read as Kubernetes would apply them, and a
mistake is still visible."""

from __future__ import annotations

from tulle.api.findings import Finding, Severity
from tulle.api.loader import Loaded


def last_definitions(loaded: list[Loaded]) -> tuple[list[Loaded], list[Finding]]:
    """``loaded`` without the definitions a later one of the same kind, namespace and name
    replaces (in load order), and a WARNING for each one replaced."""
    last: dict[tuple[str, str, str], int] = {}
    for index, item in enumerate(loaded):
        resource = item.resource
        last[(resource.KIND, resource.namespace, resource.name)] = index
    survivors: list[Loaded] = []
    findings: list[Finding] = []
    for index, item in enumerate(loaded):
        resource = item.resource
        final = last[(resource.KIND, resource.namespace, resource.name)]
        if final == index:
            survivors.append(item)
            continue
        later = loaded[final].document
        findings.append(
            item.finding(
                Severity.WARNING,
                ("metadata", "name"),
                f"{resource.ref} is defined again at {later.file}:{later.line}: the later "
                "definition replaces this one, as kubectl apply does",
            )
        )
    return survivors, findings
