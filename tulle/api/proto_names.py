"""Istio fields written with their protobuf names (``prefix_rewrite``, ``per_try_timeout``), as
Istio's own proto comments and some tools write them: istioctl reads both spellings (protobuf's
JSON mapping accepts the field's name and its JSON name), Kubernetes' CRD schema knows only the
camelCase one. Each is read as its camelCase field with a WARNING that names that spelling, so
a file keeps its meaning under Tulle and shows what to fix before ``kubectl apply``."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.alias_generators import to_camel

from tulle.api.fields import field_names, model_at
from tulle.api.source import FieldPath

Renamed = list[tuple[FieldPath, str, str]]
"""Each renamed field's path (with its new name), its proto name and its camelCase name."""


def camel_case_fields(model: type[BaseModel], data: Any) -> tuple[Any, Renamed]:
    """``data`` with every snake_case key that is the protobuf name of a field of the model
    at its path renamed to that field's camelCase name (a copy when any is), and what was
    renamed. A key that is a field's name already, or no field's, is left alone."""
    renamed: Renamed = []
    result = _walk(model, data, (), renamed)
    return (result, renamed) if renamed else (data, renamed)


def _walk(model: type[BaseModel], value: Any, path: FieldPath, renamed: Renamed) -> Any:
    if isinstance(value, list):
        return [_walk(model, item, (*path, index), renamed) for index, item in enumerate(value)]
    if not isinstance(value, dict):
        return value
    here = model_at(model, path)
    known = set(field_names(here)) if here is not None else set()
    copied: dict[Any, Any] = {}
    for key, item in value.items():
        name = key
        if here is not None and isinstance(key, str) and "_" in key and key not in known:
            camel = to_camel(key)
            if camel in known and camel not in value:
                renamed.append(((*path, camel), key, camel))
                name = camel
        copied[name] = _walk(model, item, (*path, name), renamed)
    return copied
