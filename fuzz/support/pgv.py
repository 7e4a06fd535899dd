"""The constraints Envoy's protos declare with protoc-gen-validate (``validate.rules``), checked
in Python on any message: what Envoy applies to every resource it is given (it NACKs one that
breaks them), read from the descriptors xds-protos ships. Covers the rules Envoy's xDS types
use: presence (required messages and oneofs), numeric and duration ranges, string lengths,
prefixes, patterns and the HTTP header-name and -value forms, enums defined, repeated and map
sizes, Any type URLs; ``Any`` values are unpacked and checked too. Rules it does not know
(e-mail, hostname, URI forms) are not checked."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from validate import validate_pb2

_HEADER_NAME = re.compile(r"^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$")
_HEADER_VALUE = re.compile(r"^[^\x00-\x08\x0a-\x1f\x7f]*$")
_LOOSE_HEADER = re.compile(r"^[^\x00\x0a\x0d]*$")
_NUMERIC = (
    "float", "double", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64",
)  # fmt: skip
_WRAPPERS = {
    "google.protobuf.DoubleValue", "google.protobuf.FloatValue", "google.protobuf.Int64Value",
    "google.protobuf.UInt64Value", "google.protobuf.Int32Value", "google.protobuf.UInt32Value",
    "google.protobuf.BoolValue", "google.protobuf.StringValue", "google.protobuf.BytesValue",
}  # fmt: skip
_MAX_DURATION_SECONDS = 315_576_000_000


def violations(message: Message) -> list[str]:
    """Every rule ``message`` (and what it holds) breaks, as ``path: rule``."""
    found: list[str] = []
    _message(message, message.DESCRIPTOR.name, found)
    return found


_RULES: dict[str, Any] = {}


def _rules(field: FieldDescriptor) -> Any:
    """The field's rules (None if it has none), read from its options once."""
    name = field.full_name
    if name not in _RULES:
        options = field.GetOptions()
        has = options.HasExtension(validate_pb2.rules)
        _RULES[name] = options.Extensions[validate_pb2.rules] if has else None
    return _RULES[name]


def _message(message: Message, path: str, found: list[str]) -> None:
    descriptor: Descriptor = message.DESCRIPTOR
    if descriptor.full_name == "google.protobuf.Any":
        inner = unpack(message)
        if inner is None:
            found.append(f"{path}: Any of unknown type {message.type_url!r}")
        else:
            _message(inner, f"{path}<{inner.DESCRIPTOR.name}>", found)
        return
    if descriptor.full_name == "google.protobuf.Duration":
        _valid_duration(message, path, found)
        return
    shape = _shape(descriptor)
    if shape is None:
        return
    oneofs, ruled = shape
    for oneof in oneofs:
        if message.WhichOneof(oneof) is None:
            found.append(f"{path}.{oneof}: one of its fields is required")
    seen = set()
    for field, _ in message.ListFields():  # what is set (the cost of a walk is its size)
        seen.add(field.name)
        _field(message, field, f"{path}.{field.name}", found)
    for field in ruled:  # rules that hold of an unset field too (min_len of "", required)
        if field.name in seen or field.containing_oneof is not None:
            continue  # (an unset oneof member: the oneof's own rule says whether one is due)
        _field(message, field, f"{path}.{field.name}", found)


_SHAPES: dict[str, tuple[list[str], list[FieldDescriptor]] | None] = {}


def _shape(descriptor: Descriptor) -> tuple[list[str], list[FieldDescriptor]] | None:
    """A message type's required oneofs and its fields with rules (None: not validated)."""
    name = descriptor.full_name
    if name not in _SHAPES:
        options = descriptor.GetOptions()
        if options.Extensions[validate_pb2.disabled] or options.Extensions[validate_pb2.ignored]:
            _SHAPES[name] = None
        else:
            oneofs = [o.name for o in descriptor.oneofs
                      if o.GetOptions().Extensions[validate_pb2.required]]  # fmt: skip
            ruled = [f for f in descriptor.fields if _rules(f) is not None]
            _SHAPES[name] = (oneofs, ruled)
    return _SHAPES[name]


def _field(message: Message, field: FieldDescriptor, path: str, found: list[str]) -> None:
    rules = _rules(field)
    value = getattr(message, field.name)
    if field.is_repeated:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            _map(value, field, rules, path, found)
        else:
            _repeated(list(value), field, rules, path, found)
        return
    if field.message_type is None:
        if rules is not None:
            _scalar(value, field, rules, path, found)
        return
    present = message.HasField(field.name)
    if rules is not None and rules.message.required and not present:
        found.append(f"{path}: required")
    if not present:
        return
    if rules is not None:
        _message_rules(value, field, rules, path, found)
    if rules is None or not rules.message.skip:
        _message(value, path, found)


def _message_rules(
    value: Any, field: FieldDescriptor, rules: Any, path: str, found: list[str]
) -> None:
    """Rules on a message field: a wrapper's value, a duration's range, an Any's type."""
    name = field.message_type.full_name
    kind = rules.WhichOneof("type")
    if name in _WRAPPERS and kind is not None:
        _scalar(value.value, field, rules, path, found)
    elif kind == "duration":
        _duration_rules(value, rules.duration, path, found)
    elif kind == "any":
        allowed = _allowed(rules.any)
        if allowed and value.type_url not in allowed:
            found.append(f"{path}: type {value.type_url} not in {list(allowed)}")
        if value.type_url in rules.any.not_in:
            found.append(f"{path}: type {value.type_url} not allowed")


def _repeated(
    items: list[Any], field: FieldDescriptor, rules: Any, path: str, found: list[str]
) -> None:
    if rules is not None and rules.WhichOneof("type") == "repeated":
        repeated = rules.repeated
        if not (repeated.ignore_empty and not items):
            if repeated.HasField("min_items") and len(items) < repeated.min_items:
                found.append(f"{path}: at least {repeated.min_items} items, has {len(items)}")
            if repeated.HasField("max_items") and len(items) > repeated.max_items:
                found.append(f"{path}: at most {repeated.max_items} items, has {len(items)}")
            if repeated.unique and len({repr(i) for i in items}) != len(items):
                found.append(f"{path}: items must be unique")
        item_rules = repeated.items if repeated.HasField("items") else None
    else:
        item_rules = None
    for index, item in enumerate(items):
        where = f"{path}[{index}]"
        if field.message_type is not None:
            if item_rules is not None and item_rules.WhichOneof("type"):
                _message_rules(item, field, item_rules, where, found)
            _message(item, where, found)
        elif item_rules is not None:
            _scalar(item, field, item_rules, where, found)


def _map(value: Any, field: FieldDescriptor, rules: Any, path: str, found: list[str]) -> None:
    pairs = dict(value)
    entry = field.message_type
    value_field = entry.fields_by_name["value"]
    if rules is not None and rules.WhichOneof("type") == "map":
        rule = rules.map
        if rule.HasField("min_pairs") and len(pairs) < rule.min_pairs:
            found.append(f"{path}: at least {rule.min_pairs} entries")
        if rule.HasField("max_pairs") and len(pairs) > rule.max_pairs:
            found.append(f"{path}: at most {rule.max_pairs} entries")
        for key in pairs:
            if rule.HasField("keys"):
                _scalar(key, entry.fields_by_name["key"], rule.keys, f"{path}[{key!r}]", found)
    for key, item in pairs.items():
        if value_field.message_type is not None:
            _message(item, f"{path}[{key!r}]", found)


def _scalar(value: Any, field: FieldDescriptor, rules: Any, path: str, found: list[str]) -> None:
    kind = rules.WhichOneof("type")
    if kind in _NUMERIC:
        _number(value, getattr(rules, kind), path, found)
    elif kind == "string":
        _string(value, rules.string, path, found)
    elif kind == "bytes":
        rule = rules.bytes
        if rule.HasField("min_len") and len(value) < rule.min_len:
            found.append(f"{path}: at least {rule.min_len} bytes")
    elif kind == "enum":
        rule = rules.enum
        enum = field.enum_type
        if rule.defined_only and enum is not None and value not in enum.values_by_number:
            found.append(f"{path}: {value} is not a defined {enum.name}")
        if _allowed(rule) and value not in _allowed(rule):
            found.append(f"{path}: {value} not in {list(_allowed(rule))}")
        if value in rule.not_in:
            found.append(f"{path}: {value} not allowed")


def _number(value: float, rule: Any, path: str, found: list[str]) -> None:
    if getattr(rule, "ignore_empty", False) and not value:
        return
    if rule.HasField("const") and value != rule.const:
        found.append(f"{path}: must be {rule.const}, is {value}")
    if _allowed(rule) and value not in _allowed(rule):
        found.append(f"{path}: {value} not in {list(_allowed(rule))}")
    if value in rule.not_in:
        found.append(f"{path}: {value} not allowed")
    if not _in_range(value, rule):
        found.append(f"{path}: {value} out of range ({_range_text(rule)})")


def _allowed(rule: Any) -> Any:
    """A rule's ``in`` list (a Python keyword: no attribute of that name)."""
    return getattr(rule, "in")


def _in_range(value: Any, rule: Any) -> bool:
    """PGV's range: ``gt``/``gte`` below ``lt``/``lte`` is an interval; above, its outside."""
    low = rule.gt if rule.HasField("gt") else rule.gte if rule.HasField("gte") else None
    high = rule.lt if rule.HasField("lt") else rule.lte if rule.HasField("lte") else None
    above = low is None or (value > low if rule.HasField("gt") else value >= low)
    below = high is None or (value < high if rule.HasField("lt") else value <= high)
    if low is not None and high is not None and low > high:
        return above or below
    return above and below


def _range_text(rule: Any) -> str:
    return ", ".join(f"{name} {getattr(rule, name)}" for name in ("gt", "gte", "lt", "lte")
                     if rule.HasField(name))  # fmt: skip


def _string(value: str, rule: Any, path: str, found: list[str]) -> None:
    if rule.ignore_empty and not value:
        return
    size = len(value)
    checks = (
        (rule.HasField("const") and value != rule.const, f"must be {rule.const!r}"),
        (rule.HasField("min_len") and size < rule.min_len, f"at least {rule.min_len} characters"),
        (rule.HasField("max_len") and size > rule.max_len, f"at most {rule.max_len} characters"),
        (rule.HasField("len") and size != rule.len, f"exactly {rule.len} characters"),
        (rule.HasField("min_bytes") and len(value.encode()) < rule.min_bytes, "too few bytes"),
        (rule.HasField("max_bytes") and len(value.encode()) > rule.max_bytes, "too many bytes"),
        (rule.HasField("prefix") and not value.startswith(rule.prefix), f"prefix {rule.prefix}"),
        (rule.HasField("suffix") and not value.endswith(rule.suffix), f"suffix {rule.suffix}"),
        (rule.HasField("contains") and rule.contains not in value, f"contains {rule.contains}"),
        (bool(_allowed(rule)) and value not in _allowed(rule), f"one of {list(_allowed(rule))}"),
        (value in rule.not_in, "a value not allowed"),
    )
    found.extend(f"{path}: {value[:60]!r}: {why}" for broken, why in checks if broken)
    if rule.HasField("pattern"):
        try:
            matched = re.search(rule.pattern, value) is not None
        except re.error:  # RE2 syntax Python lacks: not checked here
            matched = True
        if not matched:
            found.append(f"{path}: {value[:60]!r} does not match {rule.pattern!r}")
    if rule.WhichOneof("well_known") == "well_known_regex":
        strict = not rule.HasField("strict") or rule.strict
        if rule.well_known_regex == validate_pb2.HTTP_HEADER_NAME:
            pattern = _HEADER_NAME if strict else _LOOSE_HEADER
        elif rule.well_known_regex == validate_pb2.HTTP_HEADER_VALUE:
            pattern = _HEADER_VALUE if strict else _LOOSE_HEADER
        else:
            return
        if not pattern.match(value):
            found.append(f"{path}: {value[:60]!r} is not a valid header name or value")


def _duration_rules(value: Any, rule: Any, path: str, found: list[str]) -> None:
    nanos = value.seconds * 10**9 + value.nanos

    def total(bound: Any) -> int:
        return int(bound.seconds * 10**9 + bound.nanos)

    if rule.HasField("gt") and not nanos > total(rule.gt):
        found.append(f"{path}: {value.ToJsonString()} must be over {rule.gt.ToJsonString()}")
    if rule.HasField("gte") and not nanos >= total(rule.gte):
        found.append(f"{path}: {value.ToJsonString()} must be at least {rule.gte.ToJsonString()}")
    if rule.HasField("lt") and not nanos < total(rule.lt):
        found.append(f"{path}: {value.ToJsonString()} must be under {rule.lt.ToJsonString()}")
    if rule.HasField("lte") and not nanos <= total(rule.lte):
        found.append(f"{path}: {value.ToJsonString()} must be at most {rule.lte.ToJsonString()}")


def _valid_duration(value: Any, path: str, found: list[str]) -> None:
    """A Duration within protobuf's range, its nanos of the seconds' sign."""
    seconds, nanos = value.seconds, value.nanos
    if not -_MAX_DURATION_SECONDS <= seconds <= _MAX_DURATION_SECONDS:
        found.append(f"{path}: {seconds} s is outside a Duration's range")
    if not -999_999_999 <= nanos <= 999_999_999 or (seconds * nanos < 0):
        found.append(f"{path}: nanos {nanos} invalid for {seconds} s")


def unpack(value: Any) -> Message | None:
    """The message inside an ``Any``, or None if its type is unknown here."""
    name = value.type_url.rpartition("/")[2]
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        return None
    inner: Message = message_factory.GetMessageClass(descriptor)()
    if not value.Unpack(inner):
        return None
    return inner
