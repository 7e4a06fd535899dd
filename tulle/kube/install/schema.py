"""OpenAPI v3 schemas for the CRDs, generated from the config models of ``tulle.api``.

The API server requires a *structural* schema: every node has a ``type`` (or says it keeps
anything: ``x-kubernetes-preserve-unknown-fields`` / ``x-kubernetes-int-or-string``), no
``$ref``, no ``properties`` beside ``additionalProperties``, no ``anyOf`` that types a node.
So pydantic's JSON schema is rewritten: references inlined, optional fields ``nullable``,
unions of a type and another collapsed, defaults dropped (the API server would write them into
the stored object, as if the user had), patterns dropped (Python's regex syntax is not RE2's),
enums dropped (Tulle reads some values in any case, ``protocol: https``, which an enum of the
validated values would refuse).

Every object keeps its unknown fields (``x-kubernetes-preserve-unknown-fields: true``): the API
server would otherwise prune a field Tulle does not implement without a word, while Tulle's
validation (the validating webhook, and the control plane's status and events) reports it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

Schema = dict[str, Any]

_KEPT = ("minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems")
_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def structural_schema(model: type[BaseModel]) -> Schema:
    """The structural OpenAPI v3 schema of ``model`` (by its camelCase aliases)."""
    document = model.model_json_schema(by_alias=True)
    definitions: dict[str, Schema] = document.get("$defs", {})
    return _convert(document, definitions, ())


def _resolve(node: Schema, definitions: dict[str, Schema]) -> tuple[Schema, str | None]:
    reference = node.get("$ref")
    if reference is None:
        return node, None
    name = reference.rsplit("/", 1)[-1]
    merged = {**definitions[name], **{k: v for k, v in node.items() if k != "$ref"}}
    return merged, name


def _convert(node: Schema, definitions: dict[str, Schema], stack: tuple[str, ...]) -> Schema:
    node, name = _resolve(node, definitions)
    if name is not None:
        if name in stack:  # a recursive model: keep its content as written
            return {"type": "object", _PRESERVE: True}
        stack = (*stack, name)
    if "anyOf" in node:
        return _union(node, definitions, stack)
    kind = node.get("type")
    result: Schema = {}
    description = node.get("description")
    if isinstance(description, str):
        result["description"] = _first_paragraph(description)
    if kind == "object":
        result["type"] = "object"
        additional = node.get("additionalProperties")
        properties = node.get("properties")
        if properties:
            result["properties"] = {
                key: _convert(value, definitions, stack) for key, value in properties.items()
            }
            required = node.get("required")
            if required:
                result["required"] = list(required)
            result[_PRESERVE] = True
        elif isinstance(additional, dict):
            result["additionalProperties"] = _convert(additional, definitions, stack)
        else:
            result[_PRESERVE] = True
    elif kind == "array":
        result["type"] = "array"
        result["items"] = _convert(node.get("items", {}), definitions, stack)
    elif kind in ("string", "integer", "number", "boolean"):
        result["type"] = kind
    else:  # no type: anything
        result.pop("description", None)
        return {_PRESERVE: True, **result} | ({} if kind else {"type": "object"})
    result.update({key: node[key] for key in _KEPT if key in node})
    return result


def _union(node: Schema, definitions: dict[str, Schema], stack: tuple[str, ...]) -> Schema:
    branches = [branch for branch in node["anyOf"] if branch.get("type") != "null"]
    nullable = len(branches) < len(node["anyOf"])
    converted = [_convert(branch, definitions, stack) for branch in branches]
    types = {branch.get("type") for branch in converted}
    description = node.get("description")
    result: Schema
    if len(converted) == 1:
        result = dict(converted[0])
    elif types == {"integer", "string"}:
        result = {"x-kubernetes-int-or-string": True}
    elif len(types) == 1 and types != {None}:
        # Same type, different shapes (two object models): the type, and anything inside.
        result = {"type": types.pop()}
        if result["type"] == "object":
            result[_PRESERVE] = True
        elif result["type"] == "array":
            result["items"] = {"type": "object", _PRESERVE: True}
    else:
        result = {"type": "object", _PRESERVE: True} if types <= {"object"} else {_PRESERVE: True}
    if isinstance(description, str):
        result["description"] = _first_paragraph(description)
    if nullable:
        result["nullable"] = True
    return result


def _first_paragraph(text: str) -> str:
    return " ".join(text.strip().split("\n\n")[0].split())
