"""Turning YAML documents into typed resources, and schema errors into findings with lines."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from tulle.api.fields import field_names, model_at
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import Resource, UnknownKindError, model_for, reads_kind
from tulle.api.kinds.base import FieldError
from tulle.api.kubernetes import is_builtin
from tulle.api.not_yet import not_yet_message
from tulle.api.proto_names import Renamed, camel_case_fields
from tulle.api.source import Document, FieldPath, format_path, identify, read_paths
from tulle.api.unsupported import kind_message, strip_fields


@dataclass(frozen=True)
class Loaded:
    """A validated resource and the document it came from (for the lines of its fields)."""

    resource: Resource
    document: Document

    def finding(self, severity: Severity, path: FieldPath, message: str) -> Finding:
        """A finding about the field at ``path`` of this resource."""
        return Finding(
            file=self.document.file,
            line=self.document.line_of(path),
            severity=severity,
            kind=self.resource.KIND,
            namespace=self.resource.namespace,
            name=self.resource.name,
            field=format_path(path),
            message=message,
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


_TYPE_NAMES = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "list_type": "a list",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "int_from_float": "an integer",
}


def describe_error(error: ErrorDetails, model: type[BaseModel]) -> tuple[FieldPath, str]:
    """The field path and a message a person can act on, for one pydantic error."""
    path: FieldPath = tuple(step for step in error["loc"] if step != "[key]")
    kind = error["type"]
    ctx = error.get("ctx") or {}
    given = error.get("input")
    if kind == "value_error" and isinstance(ctx.get("error"), FieldError):
        inner: FieldError = ctx["error"]
        return (*path, *inner.path), str(inner)
    if kind == "extra_forbidden":
        inner_model = model_at(model, path[:-1])
        later = not_yet_message(inner_model.__name__, str(path[-1])) if inner_model else None
        if later is not None:
            return path, later
        allowed = field_names(inner_model) if inner_model else []
        close = difflib.get_close_matches(str(path[-1]), allowed, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        if not close and allowed:
            hint = f"; known fields: {', '.join(allowed)}"
        return path, f"unknown field{hint}"
    if kind == "missing":
        return path, "required field is missing"
    if kind in _TYPE_NAMES or (kind == "literal_error" and isinstance(given, bool)):
        expected = _TYPE_NAMES.get(kind) or f"one of {ctx.get('expected')}"
        message = f"must be {expected}, got {_short(given)} ({type(given).__name__})"
        if isinstance(given, bool) and kind != "bool_type":
            message += "; YAML reads unquoted yes/no/on/off/true/false as booleans: quote it"
        return path, message
    if kind == "literal_error":
        return path, f"must be one of {ctx.get('expected')}, got {_short(given)}"
    if kind == "value_error":
        return path, str(ctx.get("error", error["msg"]))
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return path, f"{error['msg'].replace('Input should be', 'must be')}, got {_short(given)}"
    if kind == "too_short":
        return path, "must not be empty"
    return path, f"{error['msg']}, got {_short(given)}"


def skipped(document: Document, api_version: str, kind: str, namespace: str, name: str) -> Finding:
    """The INFO finding of a Kubernetes object that is not mesh config (a Deployment, a
    ServiceAccount, a Secret...): it names the document and its kind, never its contents."""
    return Finding(
        document.file,
        document.line,
        Severity.INFO,
        kind,
        namespace,
        name,
        "-",
        f"{api_version} {kind} is not mesh config: skipped",
    )


def load_document(document: Document) -> tuple[Loaded | None, list[Finding]]:
    """Validate one document into a resource; on failure, every schema error as a finding."""
    data = document.data

    def fail(
        path: FieldPath, message: str, kind: str = "-", ns: str = "-", name: str = "-"
    ) -> Finding:
        return Finding(
            document.file,
            document.line_of(path),
            Severity.ERROR,
            kind,
            ns,
            name,
            format_path(path),
            message,
        )

    if not isinstance(data, dict):
        return None, [fail((), f"a resource must be a mapping, got {type(data).__name__}")]
    label, namespace, name = identify(data)
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    if not isinstance(kind, str) or not isinstance(api_version, str):
        missing = "kind" if not isinstance(kind, str) else "apiVersion"
        return None, [
            fail((missing,), "required field is missing or not a string", label, namespace, name)
        ]
    if kind == "List" and is_builtin(api_version):
        message = "a List's items are not read: write each item as a document of its own (---)"
        return None, [fail(("items",), message, label, namespace, name)]
    group = api_version.rpartition("/")[0]
    unsupported = kind_message(group, kind, data)
    if unsupported is not None:
        is_error, message = unsupported
        severity = Severity.ERROR if is_error else Severity.WARNING
        finding = Finding(
            document.file,
            document.line_of(("kind",)),
            severity,
            kind,
            namespace,
            name,
            "kind",
            message,
        )
        return None, [finding]
    stripped, out_of_scope = strip_fields(group, kind, data)
    early = [
        replace(fail(path, message, kind, namespace, name), severity=Severity.WARNING)
        if not is_error
        else fail(path, message, kind, namespace, name)
        for path, message, is_error in out_of_scope
    ]
    if stripped is None:
        return None, early
    if out_of_scope:
        data = stripped
        document = replace(document, data=data)
    try:
        model = model_for(api_version, kind)
    except UnknownKindError as unknown:
        if is_builtin(api_version) and not reads_kind(kind):
            return None, [skipped(document, api_version, kind, namespace, name)]
        return None, [fail((unknown.field,), str(unknown), label, namespace, name)]
    renamed: Renamed = []
    if group.endswith(".istio.io"):  # protobuf-defined kinds: istioctl reads proto names
        data, renamed = camel_case_fields(model, data)
    if renamed:
        lines = dict(document.lines)
        for path, proto, camel in renamed:
            lines[path] = document.line_of((*path[:-1], proto))
            early.append(
                replace(
                    fail(path, "", kind, namespace, name),
                    line=lines[path],
                    severity=Severity.WARNING,
                    message=f"{proto} is the protobuf name of {camel}: read as {camel}, the "
                    "name Kubernetes' CRD schema knows (it drops the other); write it so",
                )
            )
        document = replace(document, data=data, lines=lines)
    try:
        resource = model.model_validate(data)
    except ValidationError as error:
        findings = early
        for detail in error.errors(include_url=False):
            path, message = describe_error(detail, model)
            findings.append(fail(path, message, kind, namespace, name))
        return None, findings
    return Loaded(resource, document), early


def load_documents(documents: Iterable[Document]) -> tuple[list[Loaded], list[Finding]]:
    """Validate every document; keep the valid resources and report the rest."""
    loaded: list[Loaded] = []
    findings: list[Finding] = []
    for document in documents:
        item, problems = load_document(document)
        findings.extend(problems)
        if item is not None:
            loaded.append(item)
    return loaded, findings


def load_paths(paths: Sequence[str | Path]) -> tuple[list[Loaded], list[Finding]]:
    """Read and validate files and directories."""
    documents, findings = read_paths(paths)
    loaded, problems = load_documents(documents)
    return loaded, findings + problems
