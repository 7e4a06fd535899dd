"""What every resource kind shares: strict models, metadata, durations, string matches."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from tulle.api.durations import parse_duration
from tulle.api.hosts import is_valid_host
from tulle.api.names import check_dns_label, check_dns_subdomain, check_label_key, check_labels


class Strict(BaseModel):
    """Base of every config model: camelCase field names as Istio writes them, unknown fields and
    wrong types rejected, values frozen once validated."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        strict=True,
        alias_generator=to_camel,
        validate_by_alias=True,
        validate_by_name=False,
        serialize_by_alias=True,
    )


def _check_duration(text: str) -> str:
    parse_duration(text)
    return text


def _check_positive_duration(text: str) -> str:
    if parse_duration(text) < 0.001:
        raise ValueError(f"duration {text!r} must be at least 1ms")
    return text


def _check_host(host: str) -> str:
    if not is_valid_host(host.lower()):
        raise ValueError(f"{host!r} is not a valid host name (lowercase DNS labels, '*.' wildcard)")
    return host


_RE2_UNSUPPORTED = re.compile(r"\(\?[=!]|\(\?<[=!]|\\[1-9]")


def check_regex(pattern: str) -> str:
    """A regex Envoy and grpcio accept: not empty (as Istio's validation says, and Envoy's
    RegexMatcher requires), it compiles, and uses no construct RE2 lacks."""
    if not pattern:
        raise ValueError("regex must not be empty (to match anything, use '.*' or no matcher)")
    try:
        re.compile(pattern)
    except re.error as error:
        raise ValueError(f"regex {pattern!r} does not compile: {error}") from None
    if _RE2_UNSUPPORTED.search(pattern):
        raise ValueError(
            f"regex {pattern!r} uses lookaround or a backreference, which RE2 (the regex engine of "
            "Envoy and gRPC) does not support"
        )
    return pattern


_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")


def _check_header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name[:60]!r} is not a header name (letters, digits, !#$%&'*+-.^_`|~)")
    return name


def _check_header_text(value: str) -> str:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError(f"header value {value[:60]!r} holds a line break or NUL")
    return value


Duration = Annotated[str, AfterValidator(_check_duration)]
"""A duration string such as ``1.5s`` (zero allowed)."""

HeaderName = Annotated[str, AfterValidator(_check_header_name)]
"""An HTTP header name (an RFC 9110 token): what Envoy and every HTTP/1.1 peer accept."""

HeaderText = Annotated[str, AfterValidator(_check_header_text)]
"""An HTTP header value: no CR, LF or NUL (Envoy refuses them)."""

PositiveDuration = Annotated[str, AfterValidator(_check_positive_duration)]
"""A duration string of at least 1ms."""

Host = Annotated[str, AfterValidator(_check_host)]
"""A host name, short (``catalog``) or fully qualified, or a ``*.`` wildcard."""

Regex = Annotated[str, AfterValidator(check_regex)]
"""A regular expression in RE2 syntax."""

PortNumber = Annotated[int, Field(ge=1, le=65535)]
"""A TCP port."""

INT32_MAX = 2**31 - 1
UINT32_MAX = 2**32 - 1
"""The largest values of Istio's int32 and uint32 fields: the xDS fields that carry them are as
wide, and a larger number is refused here rather than failing the translation of every node."""

Labels = Annotated[dict[str, str], AfterValidator(check_labels)]
"""Kubernetes labels: ``[prefix/]name`` keys, short values of letters, digits, '-', '_', '.'."""


class ObjectMeta(BaseModel):
    """Kubernetes object metadata. Fields Kubernetes adds itself (uid, resourceVersion, ...)
    are accepted and ignored, so ``kubectl get -o yaml`` output loads unchanged.

    As in Kubernetes, the name is a DNS subdomain and the namespace a DNS label: neither can
    hold a '/' or '..', so neither can climb out of a directory named after it."""

    model_config = ConfigDict(extra="ignore", frozen=True, strict=True)

    name: Annotated[str, AfterValidator(check_dns_subdomain)]
    namespace: Annotated[str, AfterValidator(check_dns_label)] = "default"
    labels: Labels = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)

    @field_validator("annotations")
    @classmethod
    def _annotation_keys(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            check_label_key(key)
        return value


class Resource(BaseModel):
    """A whole config object: ``apiVersion``, ``kind``, ``metadata``, ``spec``.

    Subclasses set ``spec`` to their own model and ``KIND``/``GROUP``/``VERSIONS``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    KIND: ClassVar[str]
    GROUP: ClassVar[str]
    VERSIONS: ClassVar[tuple[str, ...]]

    apiVersion: str  # noqa: N815 - the Kubernetes field name
    kind: str
    metadata: ObjectMeta
    status: Any = Field(default=None, exclude=True)

    @property
    def name(self) -> str:
        """``metadata.name``."""
        return self.metadata.name

    @property
    def namespace(self) -> str:
        """``metadata.namespace`` (``default`` when absent)."""
        return self.metadata.namespace

    @property
    def ref(self) -> str:
        """``Kind namespace/name``, how messages name this resource."""
        return f"{self.KIND} {self.namespace}/{self.name}"


class FieldError(ValueError):
    """A validation error about a field below the model that raises it.

    A model validator raises it with the path from itself to the field, so that the finding
    points at that field's own line."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def check_cidrs(value: list[str]) -> list[str]:
    """Each entry is an IP address or a CIDR block."""
    for block in value:
        try:
            ipaddress.ip_network(block, strict=False)
        except ValueError:
            raise ValueError(f"{block!r} is not an IP address or CIDR block") from None
    return value


def reject_repeats(values: list[Any], path: tuple[str | int, ...], leaf: str, what: str) -> None:
    """Raise a FieldError at the second occurrence of any value in ``values``.

    The error points at ``path[index].leaf`` (``path`` leads from the validated model to the list);
    ``what`` names the value in the message."""
    for index, value in enumerate(values):
        if value in values[:index]:
            raise FieldError((*path, index, leaf), f"{what} {value!r} is used more than once")


def only_one(model: BaseModel, *names: str, required: bool = False) -> None:
    """Raise unless at most one (exactly one when ``required``) of the fields ``names`` is set."""
    chosen = [name for name in names if getattr(model, name) is not None]
    aliases = [to_camel(name) for name in names]
    if len(chosen) > 1:
        raise FieldError(
            (to_camel(chosen[1]),),
            f"set only one of {', '.join(aliases)} (got {', '.join(to_camel(c) for c in chosen)})",
        )
    if required and not chosen:
        raise ValueError(f"set one of {', '.join(aliases)}")


class StringMatch(Strict):
    """Istio's StringMatch: at most one of ``exact``, ``prefix``, ``regex``; none set means
    "present" where a header or query parameter is matched."""

    exact: str | None = None
    prefix: str | None = None
    regex: Regex | None = None

    @model_validator(mode="after")
    def _one_matcher(self) -> StringMatch:
        only_one(self, "exact", "prefix", "regex")
        return self

    @property
    def is_empty(self) -> bool:
        """True when no matcher is set."""
        return self.exact is None and self.prefix is None and self.regex is None


class LabelSelector(Strict):
    """``selector: {matchLabels: {...}}`` as in Istio's WorkloadSelector."""

    match_labels: Labels = Field(default_factory=dict)


class Percent(Strict):
    """Istio's Percent: ``{value: 12.5}``, a float from 0 to 100."""

    value: Annotated[float, Field(ge=0.0, le=100.0)]
