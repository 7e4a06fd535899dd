"""Config sources: files and directories given with ``-f`` (watched), resources applied over
the API (kept in the state store) and, with ``--registry kubernetes``, custom resources of the
cluster. Every change is validated against everything else; a change with an error is refused
whole and the last good config stays in force. The cluster's resources are judged one by one
(a resource's last good version stays in force while its new one is refused), because they
change independently and each has a ``.status`` to say why.

Precedence for one ``(kind, namespace, name)``: applied over the cluster's over files'."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tulle.api import Validation, validate_documents
from tulle.api.findings import Finding, Severity
from tulle.api.source import YAML_SUFFIXES, Document, parse_yaml, read_paths
from tulle.control.store import ResourceKey, StateStore

log = logging.getLogger(__name__)

APPLIED = "<applied>"


def key_of(data: Any) -> ResourceKey | None:
    """``(kind, namespace, name)`` of raw resource data, when it has them."""
    if not isinstance(data, dict):
        return None
    metadata = data.get("metadata") if isinstance(data.get("metadata"), dict) else {}
    assert isinstance(metadata, dict)
    kind, name = data.get("kind"), metadata.get("name")
    namespace = metadata.get("namespace", "default")
    if not all(isinstance(v, str) for v in (kind, name, namespace)):
        return None
    return (kind, namespace, name)  # type: ignore[return-value]


@dataclass(frozen=True)
class ChangeResult:
    """The outcome of a change: accepted or not, its findings, and what it changed."""

    accepted: bool
    findings: tuple[Finding, ...]
    created: tuple[ResourceKey, ...] = ()
    updated: tuple[ResourceKey, ...] = ()
    unchanged: tuple[ResourceKey, ...] = ()
    deleted: tuple[ResourceKey, ...] = ()


@dataclass(frozen=True)
class ClusterResult:
    """The outcome of an update of the cluster's resources: whether the config in force
    changed, and the findings of each accepted and each refused resource."""

    changed: bool
    accepted: dict[ResourceKey, tuple[Finding, ...]]
    refused: dict[ResourceKey, tuple[Finding, ...]]


def _fingerprint(paths: Sequence[Path]) -> tuple[tuple[str, int, int], ...]:
    entries = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*")) if root.is_dir() else []
        for path in files:
            if path.is_file() and (path.suffix in YAML_SUFFIXES or path == root):
                try:
                    stat = path.stat()
                except OSError:
                    continue
                entries.append((str(path), stat.st_mtime_ns, stat.st_size))
    return tuple(entries)


@dataclass
class ConfigSources:
    """The config in force: last good file documents plus applied resources."""

    paths: Sequence[Path]
    store: StateStore
    known_hosts: Callable[[], Iterable[str]] = lambda: ()
    file_documents: list[Document] = field(default_factory=list)
    file_findings: tuple[Finding, ...] = ()
    validation: Validation | None = None
    cluster_documents: dict[ResourceKey, Document] = field(default_factory=dict)
    """The cluster's resources in force: each one's last good version."""
    _fingerprint: tuple[tuple[str, int, int], ...] = ()

    def applied_documents(self) -> list[Document]:
        """The stored resources as documents."""
        return [
            Document(file=APPLIED, line=1, data=data) for data in self.store.resources().values()
        ]

    def _combine(
        self,
        files: list[Document],
        applied: list[Document],
        cluster: dict[ResourceKey, Document] | None = None,
    ) -> list[Document]:
        cluster_docs = list((self.cluster_documents if cluster is None else cluster).values())
        overridden = {key_of(d.data) for d in applied}
        below = {key_of(d.data) for d in cluster_docs} | overridden
        return (
            [d for d in files if key_of(d.data) not in below]
            + [d for d in cluster_docs if key_of(d.data) not in overridden]
            + applied
        )

    def set_cluster(self, incoming: dict[ResourceKey, Document]) -> ClusterResult:
        """Take the cluster's resources as they are now. A new or changed resource that fails
        validation (or makes another fail) is refused and its last good version, if any,
        stays in force; a resource that did not change is never dropped for another's
        change. A deletion is taken as it is, unless it breaks what remains: then nothing of
        this update is taken."""
        good = self.cluster_documents
        candidate = dict(incoming)
        changes = {k for k, d in incoming.items() if k not in good or good[k].data != d.data}
        refused: dict[ResourceKey, tuple[Finding, ...]] = {}
        applied = self.applied_documents()
        result = self._validate(self._combine(self.file_documents, applied, candidate))
        while not result.ok:
            files = {d.file: k for k, d in candidate.items()}
            errors: dict[ResourceKey, list[Finding]] = {}
            first: Finding | None = None
            for finding in result.findings:
                if finding.severity is Severity.ERROR:
                    first = first or finding
                    key = files.get(finding.file)
                    if key is not None:
                        errors.setdefault(key, []).append(finding)
            culprits = {k for k in errors if k in changes and k not in refused}
            if not culprits:  # unchanged resources broke: every change not yet refused is
                culprits = changes - refused.keys()  # suspect
            if not culprits or first is None:
                log.error(
                    "cluster config not taken, the last good stays: %s",
                    first.format() if first is not None else "?",
                )
                return ClusterResult(False, {}, {})
            for key in culprits:
                document = incoming[key]
                refused[key] = tuple(errors.get(key, ())) or (
                    Finding(
                        document.file, 1, Severity.ERROR, *key, "-",
                        f"refused: with it, {first.format()}",
                    ),
                )  # fmt: skip
                if key in good:
                    candidate[key] = good[key]  # the last good version stays in force
                else:
                    candidate.pop(key, None)
            result = self._validate(self._combine(self.file_documents, applied, candidate))
        accepted = {
            key: tuple(f for f in result.findings if f.file == document.file)
            for key, document in incoming.items()
            if key not in refused
        }
        changed = {k: d.data for k, d in candidate.items()} != {k: d.data for k, d in good.items()}
        self.cluster_documents = candidate
        self.validation = result
        return ClusterResult(changed, accepted, refused)

    def _validate(self, documents: list[Document], earlier: Iterable[Finding] = ()) -> Validation:
        # the registry's hosts are the whole mesh's: an undefined host is an ERROR here
        # (tulle validate --strict-hosts), Workloads or not
        return validate_documents(
            documents, earlier, known_hosts=self.known_hosts(), strict_hosts=True
        )

    def load(self) -> Validation:
        """Read the files and the store; at start there is no last good config, so with errors
        in the files the mesh starts from the applied resources alone."""
        self._fingerprint = _fingerprint(self.paths)
        documents, read_findings = read_paths(self.paths, allow_empty_dirs=True)
        applied = self.applied_documents()
        result = self._validate(self._combine(documents, applied), read_findings)
        if result.ok:
            self.file_documents, self.file_findings = documents, result.findings
        else:
            self.file_findings = result.findings
            result = self._validate(applied)
        self.validation = result
        return result

    def poll_files(self) -> bool:
        """Re-read the files if any changed; True when the config in force changed."""
        fingerprint = _fingerprint(self.paths)
        if fingerprint == self._fingerprint:
            return False
        self._fingerprint = fingerprint
        documents, read_findings = read_paths(self.paths, allow_empty_dirs=True)
        result = self._validate(self._combine(documents, self.applied_documents()), read_findings)
        self.file_findings = result.findings
        if not result.ok:
            for finding in result.findings:
                if finding.severity is Severity.ERROR:
                    log.error("config rejected, last good config stays: %s", finding.format())
            return False
        self.file_documents = documents
        self.validation = result
        return True

    def revalidate(self) -> bool:
        """Validate again (the registry changed); keeps the last good config on an error."""
        result = self._validate(self._combine(self.file_documents, self.applied_documents()))
        if not result.ok:
            return False
        self.validation = result
        return True

    def apply(self, text: str, filename: str) -> ChangeResult:
        """Apply YAML (one or more resources) given as text; all or nothing."""
        documents, findings = parse_yaml(text, filename)
        if findings and any(f.severity is Severity.ERROR for f in findings):
            return ChangeResult(False, tuple(findings))
        if not documents:
            empty = Finding(filename, 1, Severity.ERROR, "-", "-", "-", "-", "no resource given")
            return ChangeResult(False, (empty,))
        stored = self.store.resources()
        incoming = {key_of(d.data): d for d in documents}
        current = {k: Document(APPLIED, 1, v) for k, v in stored.items()}
        candidate_applied = [d for k, d in current.items() if k not in incoming]
        candidate_applied += documents
        result = self._validate(self._combine(self.file_documents, candidate_applied))
        if not result.ok:
            return ChangeResult(False, result.findings)
        created: list[ResourceKey] = []
        updated: list[ResourceKey] = []
        unchanged: list[ResourceKey] = []
        upserts: dict[ResourceKey, dict[str, Any]] = {}
        for item in result.loaded:
            if item.document.file != filename:
                continue
            r = item.resource
            key = (r.KIND, r.namespace, r.name)
            data = r.model_dump(mode="json", by_alias=True, exclude_none=True)
            if stored.get(key) == data:
                unchanged.append(key)
                continue
            (updated if key in stored else created).append(key)
            upserts[key] = data
        self.store.replace_resources(upserts, [])
        self.validation = result
        return ChangeResult(True, result.findings, tuple(created), tuple(updated), tuple(unchanged))

    def delete(self, key: ResourceKey) -> ChangeResult:
        """Delete an applied resource, unless something else still needs it."""
        stored = self.store.resources()
        if key not in stored:
            in_files = any(key_of(d.data) == key for d in self.file_documents)
            where = " (it comes from a -f file: edit the file instead)" if in_files else ""
            if key in self.cluster_documents:
                where = " (it comes from the cluster: kubectl delete it there)"
            missing = Finding(
                APPLIED, 0, Severity.ERROR, key[0], key[1], key[2], "-",
                f"no applied resource {key[0]} {key[1]}/{key[2]}{where}",
            )  # fmt: skip
            return ChangeResult(False, (missing,))
        remaining = [Document(APPLIED, 1, v) for k, v in stored.items() if k != key]
        result = self._validate(self._combine(self.file_documents, remaining))
        if not result.ok:
            return ChangeResult(False, result.findings)
        self.store.replace_resources({}, [key])
        self.validation = result
        return ChangeResult(True, result.findings, deleted=(key,))

    def source_of(self, key: ResourceKey) -> str:
        """Where the resource in force comes from: ``applied`` or its file."""
        return self.sources().get(key, "-")

    def sources(self) -> dict[ResourceKey, str]:
        """Where each resource in force comes from, read once (for listing many)."""
        found: dict[ResourceKey, str] = {}
        for document in self.file_documents:
            key = key_of(document.data)
            if key is not None:
                found[key] = os.fspath(document.file)
        found.update(dict.fromkeys(self.cluster_documents, "kubernetes"))
        found.update(dict.fromkeys(self.store.resources(), "applied"))
        return found
