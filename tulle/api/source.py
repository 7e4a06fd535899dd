"""Reading YAML files and directories into documents that remember the line of every field.

A :class:`Document` is one YAML document of one file: its plain data plus the line on which each
field path starts, so that a validation error can point at the offending line."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tulle.api.bounded_yaml import YamlLimitError, compose_documents, construct_document
from tulle.api.findings import Finding, Severity

FieldPath = tuple[str | int, ...]

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Document:
    """One YAML document: its data, where it came from, and the line of each field path."""

    file: str
    line: int
    data: Any
    lines: Mapping[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: Iterable[str | int]) -> int:
        """The line of the deepest part of ``path`` that exists in the document."""
        steps = tuple(path)
        while steps:
            if steps in self.lines:
                return self.lines[steps]
            steps = steps[:-1]
        return self.line


def format_path(path: Iterable[str | int]) -> str:
    """``("spec", "http", 0, "route")`` → ``spec.http[0].route``."""
    text = ""
    for step in path:
        if isinstance(step, int):
            text += f"[{step}]"
        else:
            text += f".{step}" if text else step
    return text or "-"


def identify(data: Any) -> tuple[str, str, str]:
    """``(kind, namespace, name)`` of raw resource data, with ``-`` for what is missing."""
    if not isinstance(data, dict):
        return "-", "-", "-"
    kind = data.get("kind")
    metadata = data.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    name = metadata.get("name")
    namespace = metadata.get("namespace", "default")
    return (
        kind if isinstance(kind, str) else "-",
        namespace if isinstance(namespace, str) else "default",
        name if isinstance(name, str) else "-",
    )


def _file_finding(file: str, line: int, message: str) -> Finding:
    return Finding(file, line, Severity.ERROR, "-", "-", "-", "-", message)


def _walk(
    node: yaml.Node, path: FieldPath, lines: dict[FieldPath, int], duplicates: list[FieldPath]
) -> None:
    """Record the line of every field below ``node``, and every key that appears twice."""
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            if key in seen:
                duplicates.append((*path, key))
            seen.add(key)
            child = (*path, _coerce_key(key_node))
            _walk(value_node, child, lines, duplicates)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, duplicates)


def _coerce_key(key_node: yaml.Node) -> str | int:
    """Integer keys (``portLevelMtls: {8080: ...}``) stay integers, as the data has them."""
    if isinstance(key_node, yaml.ScalarNode) and key_node.tag == "tag:yaml.org,2002:int":
        try:
            return int(key_node.value)
        except ValueError:
            return str(key_node.value)
    return str(key_node.value)


def _yaml_finding(file: str, error: yaml.YAMLError, what: str, text: str = "") -> Finding:
    """A finding for a YAML error, at its line when it has one (a character the reader
    refuses has a position in ``text`` instead of a line)."""
    if isinstance(error, yaml.reader.ReaderError):
        line = text.count("\n", 0, error.position) + 1
        character = error.character
        shown = f"{character:#06x}" if isinstance(character, int) else repr(character)
        return _file_finding(file, line, f"{what}: character {shown} is not allowed in YAML")
    if not isinstance(error, yaml.MarkedYAMLError):
        return _file_finding(file, 1, f"{what}: {error}")
    mark = error.problem_mark or error.context_mark
    line = mark.line + 1 if mark is not None else 1
    problem = error.problem or str(error)
    if error.context and error.context_mark is not None:
        problem += f" ({error.context} on line {error.context_mark.line + 1})"
    return _file_finding(file, line, f"{what}: {problem}")


def parse_yaml(text: str, file: str) -> tuple[list[Document], list[Finding]]:
    """Split ``text`` into documents; a syntax error, or YAML past the bounds of
    :mod:`tulle.api.bounded_yaml` (nesting, alias expansion), becomes a finding with its line."""
    documents: list[Document] = []
    findings: list[Finding] = []
    try:
        nodes = compose_documents(text)
    except YamlLimitError as error:
        return [], [_yaml_finding(file, error, "YAML refused")]
    except yaml.YAMLError as error:
        return [], [_yaml_finding(file, error, "YAML syntax error", text)]
    for node in nodes:
        if node is None:
            continue
        try:
            data = construct_document(node)
        except yaml.YAMLError as error:
            findings.append(_yaml_finding(file, error, "YAML error"))
            continue
        if data is None:
            continue
        lines: dict[FieldPath, int] = {}
        duplicates: list[FieldPath] = []
        _walk(node, (), lines, duplicates)
        document = Document(file=file, line=node.start_mark.line + 1, data=data, lines=lines)
        documents.append(document)
        kind, namespace, name = identify(data)
        findings.extend(
            Finding(
                file,
                document.line_of(dup),
                Severity.ERROR,
                kind,
                namespace,
                name,
                format_path(dup),
                "key appears twice in one mapping (YAML keeps only the last)",
            )
            for dup in duplicates
        )
    return documents, findings


def _yaml_files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and child.suffix in YAML_SUFFIXES:
                yield child
    else:
        yield path


def read_paths(
    paths: Iterable[str | Path], allow_empty_dirs: bool = False
) -> tuple[list[Document], list[Finding]]:
    """Read files and directories (recursively, ``*.yaml`` and ``*.yml``) into documents.

    A path that does not exist or cannot be read is a finding, not an exception; so is a
    directory without config, unless ``allow_empty_dirs`` (a watched directory may start empty)."""
    documents: list[Document] = []
    findings: list[Finding] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            findings.append(_file_finding(str(root), 0, "no such file or directory"))
            continue
        files = list(_yaml_files(root))
        if root.is_dir() and not files and not allow_empty_dirs:
            findings.append(_file_finding(str(root), 0, "directory holds no .yaml or .yml file"))
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except UnicodeDecodeError as error:
                findings.append(_file_finding(str(file), 1, f"not UTF-8 text: {error.reason}"))
                continue
            except OSError as error:
                findings.append(_file_finding(str(file), 0, f"cannot read: {error.strerror}"))
                continue
            file_documents, file_findings = parse_yaml(text, str(file))
            documents.extend(file_documents)
            findings.extend(file_findings)
    return documents, findings
