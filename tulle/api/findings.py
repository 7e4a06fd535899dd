"""Findings: what validation reports about a piece of config, and how a finding is printed."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass


class Severity(enum.StrEnum):
    """How bad a finding is: an ERROR rejects the config, a WARNING points at a likely mistake,
    an INFO only says what was done (a document that is not mesh config, skipped)."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"


@dataclass(frozen=True, order=True)
class Finding:
    """One problem in one place: ``FILE:LINE: SEVERITY KIND NAMESPACE/NAME: FIELD.PATH: message``.

    ``kind``, ``namespace``, ``name`` and ``field`` are ``-`` when the problem is not inside a
    resource (a YAML syntax error, an unreadable file)."""

    file: str
    line: int
    severity: Severity
    kind: str
    namespace: str
    name: str
    field: str
    message: str

    def format(self) -> str:
        """The one-line form printed by ``tulle validate``: characters that are not printable
        (a line break inside a kind or name, which YAML allows) are shown escaped."""
        line = (
            f"{self.file}:{self.line}: {self.severity.value} {self.kind} "
            f"{self.namespace}/{self.name}: {self.field}: {self.message}"
        )
        if line.isprintable():
            return line
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in line)

    def to_dict(self) -> dict[str, str | int]:
        """The JSON form printed by ``tulle validate -o json``."""
        data: dict[str, str | int] = asdict(self)
        data["severity"] = self.severity.value
        return data


def has_errors(findings: list[Finding] | tuple[Finding, ...]) -> bool:
    """True when any finding is an error (the config must be rejected)."""
    return any(finding.severity is Severity.ERROR for finding in findings)
