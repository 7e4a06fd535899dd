"""Tulle's config API: load YAML files into typed resources, validate them (schema and
cross-resource checks, with file and line), and normalize them into one immutable mesh model.

Entry points: :func:`validate_paths` (files and directories), :func:`validate_documents`
(documents already read, e.g. from the HTTP API), :func:`build_model`."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tulle.api.check_context import Context
from tulle.api.checks import cross_check
from tulle.api.findings import Finding, Severity, has_errors
from tulle.api.kinds import KINDS, Resource
from tulle.api.loader import Loaded, load_documents
from tulle.api.model import MeshModel
from tulle.api.normalize import build_model
from tulle.api.redefinitions import last_definitions
from tulle.api.source import Document, parse_yaml, read_paths


@dataclass(frozen=True)
class Validation:
    """The outcome of validating config: the resources that loaded, and every finding in file
    and line order. ``model`` is the normalized mesh, or None when any finding is an error."""

    loaded: tuple[Loaded, ...]
    findings: tuple[Finding, ...]
    model: MeshModel | None

    @property
    def resources(self) -> tuple[Resource, ...]:
        """The resources that passed schema validation."""
        return tuple(item.resource for item in self.loaded)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not has_errors(self.findings)


def _sort_key(finding: Finding) -> tuple[str, int, str, str]:
    return (finding.file, finding.line, finding.field, finding.message)


def validate_documents(
    documents: Iterable[Document],
    earlier: Iterable[Finding] = (),
    known_hosts: Iterable[str] = (),
    strict_hosts: bool = False,
) -> Validation:
    """Validate parsed documents; ``earlier`` carries findings from reading them. A host that
    neither they nor ``known_hosts`` define is an ERROR with ``strict_hosts`` or when they hold
    a Workload, else a WARNING (:mod:`tulle.api.check_context`). A resource defined twice is
    the later definition (:mod:`tulle.api.redefinitions`)."""
    everything, findings = load_documents(documents)
    loaded, replaced = last_definitions(everything)
    findings = [*earlier, *findings, *replaced, *cross_check(loaded, known_hosts, strict_hosts)]
    findings.sort(key=_sort_key)
    model = None if has_errors(findings) else build_model(item.resource for item in loaded)
    return Validation(tuple(loaded), tuple(findings), model)


def validate_paths(
    paths: Sequence[str | Path], known_hosts: Iterable[str] = (), strict_hosts: bool = False
) -> Validation:
    """Read and validate YAML files and directories."""
    documents, findings = read_paths(paths)
    return validate_documents(documents, findings, known_hosts, strict_hosts)


def validate_text(
    text: str, file: str = "<text>", known_hosts: Iterable[str] = (), strict_hosts: bool = False
) -> Validation:
    """Validate YAML given as text (``file`` names it in findings)."""
    documents, findings = parse_yaml(text, file)
    return validate_documents(documents, findings, known_hosts, strict_hosts)


def hosts_defined_in(paths: Sequence[str | Path]) -> tuple[set[str], list[Finding]]:
    """The hosts the Workloads, Kubernetes Services and ServiceEntries of ``paths`` define
    (``tulle validate --hosts-from``), and the findings of reading them that stop it: files
    that cannot be read or parsed. Their other findings are not the caller's concern."""
    documents, findings = read_paths(paths)
    loaded, _ = load_documents(documents)
    return Context(loaded).hosts, [f for f in findings if f.severity is Severity.ERROR]


__all__ = [
    "KINDS",
    "Finding",
    "MeshModel",
    "Resource",
    "Severity",
    "Validation",
    "build_model",
    "hosts_defined_in",
    "validate_documents",
    "validate_paths",
    "validate_text",
]
