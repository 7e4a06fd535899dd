"""Compiled matchers for route selection: strings, headers, query parameters, paths.

Built once per config update from Envoy's route protos; evaluated per request with no parsing."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

StringTest = Callable[[str], bool]


class ConfigError(ValueError):
    """A resource the engine cannot use; the message is sent back as the NACK reason."""


def compile_regex(pattern: str) -> re.Pattern[str]:
    """A full-match regex (Envoy's safe_regex matches the whole value)."""
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ConfigError(f"invalid regex {pattern!r}: {error}") from None


def string_test(matcher: Any) -> StringTest:
    """An Envoy StringMatcher as a predicate."""
    kind = matcher.WhichOneof("match_pattern")
    ignore = matcher.ignore_case
    if kind == "exact":
        value = matcher.exact.lower() if ignore else matcher.exact
        return (lambda s: s.lower() == value) if ignore else (lambda s: s == value)
    if kind == "prefix":
        value = matcher.prefix.lower() if ignore else matcher.prefix
        return (
            (lambda s: s.lower().startswith(value)) if ignore else (lambda s: s.startswith(value))
        )
    if kind == "suffix":
        value = matcher.suffix.lower() if ignore else matcher.suffix
        return (lambda s: s.lower().endswith(value)) if ignore else (lambda s: s.endswith(value))
    if kind == "contains":
        value = matcher.contains
        return lambda s: value in s
    if kind == "safe_regex":
        pattern = compile_regex(matcher.safe_regex.regex)
        return lambda s: pattern.fullmatch(s) is not None
    raise ConfigError(f"unsupported string matcher {kind!r}")


@dataclass(frozen=True)
class HeaderTest:
    """One header condition: present, or its value passes ``test``; ``invert`` negates."""

    name: str
    test: StringTest | None
    invert: bool

    def __call__(self, headers: Mapping[str, str]) -> bool:
        value = headers.get(self.name)
        present = value is not None
        result = present if self.test is None or value is None else self.test(value)
        return result != self.invert


def header_test(matcher: Any) -> HeaderTest:
    """An Envoy HeaderMatcher (string_match or present_match)."""
    name = matcher.name.lower()
    kind = matcher.WhichOneof("header_match_specifier")
    if kind == "string_match":
        return HeaderTest(name, string_test(matcher.string_match), matcher.invert_match)
    if kind == "present_match":  # true: matches when present; false: when absent
        invert = matcher.invert_match if matcher.present_match else not matcher.invert_match
        return HeaderTest(name, None, invert)
    if kind == "exact_match":
        value = matcher.exact_match
        return HeaderTest(name, lambda s: s == value, matcher.invert_match)
    if kind is None:
        return HeaderTest(name, None, matcher.invert_match)
    raise ConfigError(f"unsupported header matcher {kind!r} for {name}")


@dataclass(frozen=True)
class PathTest:
    """The path part of a RouteMatch: prefix, exact path or full-match regex."""

    kind: str
    value: str
    pattern: re.Pattern[str] | None
    case_sensitive: bool

    def __call__(self, path: str) -> bool:
        if not self.case_sensitive:
            path = path.lower()
        if self.kind == "prefix":
            return path.startswith(self.value)
        if self.kind == "path":
            return path == self.value
        assert self.pattern is not None
        return self.pattern.fullmatch(path) is not None


def path_test(match: Any) -> PathTest:
    """The path specifier of an Envoy RouteMatch."""
    kind = match.WhichOneof("path_specifier")
    sensitive = match.case_sensitive.value if match.HasField("case_sensitive") else True
    if kind == "prefix":
        return PathTest(
            "prefix", match.prefix if sensitive else match.prefix.lower(), None, sensitive
        )
    if kind == "path":
        return PathTest("path", match.path if sensitive else match.path.lower(), None, sensitive)
    if kind == "safe_regex":
        flags = 0 if sensitive else re.IGNORECASE
        try:
            pattern = re.compile(match.safe_regex.regex, flags)
        except re.error as error:
            raise ConfigError(f"invalid regex {match.safe_regex.regex!r}: {error}") from None
        return PathTest("regex", "", pattern, True)
    if kind == "path_separated_prefix":
        value = match.path_separated_prefix
        pattern = re.compile(re.escape(value) + "(/.*)?")
        return PathTest("regex", "", pattern, sensitive)
    raise ConfigError(
        f"route match needs a path specifier (prefix, path or safe_regex), got {kind}"
    )


@dataclass(frozen=True)
class QueryTest:
    """One query-parameter condition."""

    name: str
    test: StringTest | None

    def __call__(self, query: Mapping[str, Sequence[str]]) -> bool:
        values = query.get(self.name)
        if not values:
            return False
        return self.test is None or any(self.test(v) for v in values)


def query_test(matcher: Any) -> QueryTest:
    """An Envoy QueryParameterMatcher."""
    if matcher.WhichOneof("query_parameter_match_specifier") == "string_match":
        return QueryTest(matcher.name, string_test(matcher.string_match))
    return QueryTest(matcher.name, None)
