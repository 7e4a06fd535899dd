"""The loader's own list of fields: every message (model) each kind reads, where it appears
and which fields it takes, walked from the models themselves.

``docs/compatibility.md`` is checked against this list by a test, so the table of what Tulle
supports cannot drift from what the loader reads. The same walk finds the model at a field
path, which the loader uses to name the fields a message accepts."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from tulle.api.source import FieldPath


def strip_optional(annotation: Any) -> Any:
    """``annotation`` without Optional and Annotated around it."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            annotation = members[0]
        else:
            return annotation


def _step(annotation: Any, step: str | int) -> Any:
    annotation = strip_optional(annotation)
    origin = typing.get_origin(annotation)
    if origin is list and isinstance(step, int):
        return typing.get_args(annotation)[0]
    if origin is dict:
        return typing.get_args(annotation)[1]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel) and isinstance(step, str):
        for name, info in annotation.model_fields.items():
            if (info.alias or name) == step:
                return info.annotation
    return None


def model_at(model: type[BaseModel], path: FieldPath) -> type[BaseModel] | None:
    """The model of the value at ``path`` below ``model`` (a document's field path, list
    indices and mapping keys included), or None when no model is there."""
    annotation: Any = model
    for step in path:
        annotation = _step(annotation, step)
        if annotation is None:
            return None
    annotation = strip_optional(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def field_names(model: type[BaseModel]) -> list[str]:
    """The field names a model accepts, as written in YAML (camelCase aliases)."""
    return [info.alias or name for name, info in model.model_fields.items()]


def _models_in(annotation: Any) -> list[tuple[type[BaseModel], str]]:
    """Each model inside a field's type, with the path suffix that reaches it: ``[]`` for a
    list item, ``{}`` for a mapping value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, "")]
    origin = typing.get_origin(annotation)
    found: list[tuple[type[BaseModel], str]] = []
    if origin is list:
        found += [(m, "[]" + s) for m, s in _models_in(typing.get_args(annotation)[0])]
    elif origin is dict:
        found += [(m, "{}" + s) for m, s in _models_in(typing.get_args(annotation)[1])]
    else:
        for argument in typing.get_args(annotation):
            found += _models_in(argument)
    return found


@dataclass
class Message:
    """One model a kind reads: its name, the fields it takes, and the paths where it appears
    (``spec.http[].match[]``; ``[]`` a list item, ``{}`` a mapping value)."""

    model: type[BaseModel]
    paths: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The model's name (Istio's and the Gateway API's message names, mostly)."""
        return self.model.__name__

    @property
    def fields(self) -> list[str]:
        """The field names it takes, as written in YAML."""
        return field_names(self.model)


def messages(spec: type[BaseModel]) -> list[Message]:
    """Every model reachable from a kind's ``spec`` model, in the order a reader meets them,
    each once, with every path it appears at."""
    found: dict[type[BaseModel], Message] = {spec: Message(spec, ["spec"])}

    def walk(model: type[BaseModel], path: str) -> None:
        for name, info in model.model_fields.items():
            here = f"{path}.{info.alias or name}"
            for inner, suffix in _models_in(info.annotation):
                if inner in found:
                    found[inner].paths.append(here + suffix)
                    continue
                found[inner] = Message(inner, [here + suffix])
                walk(inner, here + suffix)

    walk(spec, "spec")
    return list(found.values())
