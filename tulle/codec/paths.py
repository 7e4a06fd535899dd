"""Request paths normalized before routing and policy, as Envoy normalizes them for Istio
(``normalize_path``: RFC 3986 section 6 normalization; ``merge_slashes``; the escaped-slash
action): an AuthorizationPolicy on ``/admin`` must see ``/./admin``, ``/x/../admin``,
``/%61dmin`` and ``/%2e/admin`` as ``/admin``, and the app must receive what the policy saw.
Sans-IO and pure; the common path (nothing to normalize) costs a few ``in`` tests."""

from __future__ import annotations

from dataclasses import dataclass

# RFC 3986 2.3: percent-encodings of these are decoded (they mean the same either way).
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class PathNormalization:
    """Istio's ``meshConfig.pathNormalization`` levels: NONE, BASE (the default: RFC 3986
    normalization and the decoding of unreserved characters), MERGE_SLASHES (BASE, then
    ``//`` becomes ``/``), DECODE_AND_MERGE_SLASHES (also ``%2F`` and ``%5C`` decoded to
    ``/`` first)."""

    normalize: bool = True
    merge_slashes: bool = False
    decode_slashes: bool = False

    @classmethod
    def named(cls, level: str) -> PathNormalization:
        """The settings of one of Istio's level names."""
        if level == "NONE":
            return cls(normalize=False)
        if level == "MERGE_SLASHES":
            return cls(merge_slashes=True)
        if level == "DECODE_AND_MERGE_SLASHES":
            return cls(merge_slashes=True, decode_slashes=True)
        if level == "BASE":
            return cls()
        raise ValueError(f"unknown path normalization {level!r}")


BASE = PathNormalization()


class PathError(ValueError):
    """A path that cannot be normalized (not origin-form)."""


def normalize_target(target: str, how: PathNormalization = BASE) -> str:
    """``target`` (a path with its query) normalized; the query is left as it is. Raises
    PathError for a target that is not a path (it must begin with ``/``)."""
    if not how.normalize:
        return target
    if (
        "%" not in target
        and "/." not in target
        and "\\" not in target
        and not (how.merge_slashes and "//" in target)
    ):
        return target  # the common case: nothing to do (the query looked at too: it is short)
    path, mark, query = target.partition("?")
    if path[:1] != "/" and path[:1] != "\\":
        raise PathError(f"path {path[:80]!r} does not begin with '/'")
    path = _decode(path, how.decode_slashes).replace("\\", "/")
    path = _remove_dot_segments(path)
    if how.merge_slashes:
        while "//" in path:
            path = path.replace("//", "/")
    return path + mark + query


def _decode(path: str, decode_slashes: bool) -> str:
    """Percent-encodings of unreserved characters decoded (and of ``/`` and ``\\`` when
    ``decode_slashes``), the others' hex digits in upper case; a ``%`` not followed by two
    hex digits stays as it is."""
    if "%" not in path:
        return path
    out: list[str] = []
    start = 0
    index = path.find("%")
    while index != -1:
        digits = path[index + 1 : index + 3]
        if len(digits) == 2 and all(ord(c) in _HEX for c in digits):
            byte = int(digits, 16)
            out.append(path[start:index])
            if byte in _UNRESERVED or (decode_slashes and byte in (0x2F, 0x5C)):
                out.append(chr(byte))
            else:
                out.append("%" + digits.upper())
            start = index + 3
        index = path.find("%", index + 1 if start <= index else start)
    out.append(path[start:])
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 5.2.4 for an absolute path: ``.`` segments go, ``..`` takes the segment before
    it (never above the root); the trailing slash of a path ending in a dot segment stays."""
    segments = path.split("/")[1:]
    kept: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                kept.append("")
        elif segment == "..":
            if kept:
                kept.pop()
            if last:
                kept.append("")
        else:
            kept.append(segment)
    return "/" + "/".join(kept)
