"""SPIFFE identities of the mesh's workloads: ``spiffe://<trust domain>/ns/<namespace>/sa/<sa>``.

The one shape Tulle (like Istio) issues and accepts, parsed strictly by the SPIFFE ID rules: a
lowercase trust domain of letters, digits, ``.``, ``-`` and ``_``; no port, user info, query or
fragment; path segments that are neither empty nor ``.`` or ``..``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SCHEME = "spiffe://"
MAX_ID_LENGTH = 2048  # the SPIFFE ID spec's limit on a whole ID
MAX_TRUST_DOMAIN_LENGTH = 255

CONTROL_PLANE_NAMESPACE = "tulle-system"
CONTROL_PLANE_SERVICE_ACCOUNT = "tulle-controlplane"

_TRUST_DOMAIN_CHARACTERS = re.compile(r"[a-z0-9._-]+")
_SEGMENT_CHARACTERS = re.compile(r"[A-Za-z0-9._-]+")


def check_trust_domain(name: str) -> str:
    """``name`` if it is a valid SPIFFE trust domain, else ``ValueError`` saying why."""
    if not name:
        raise ValueError("trust domain is empty")
    if len(name) > MAX_TRUST_DOMAIN_LENGTH:
        raise ValueError(f"trust domain is longer than {MAX_TRUST_DOMAIN_LENGTH} characters")
    if ":" in name:
        raise ValueError(f"trust domain {name!r} has a port (':'), which SPIFFE forbids")
    if "@" in name:
        raise ValueError(f"trust domain {name!r} has user info ('@'), which SPIFFE forbids")
    if not _TRUST_DOMAIN_CHARACTERS.fullmatch(name):
        bad = sorted({c for c in name if not _TRUST_DOMAIN_CHARACTERS.fullmatch(c)})
        raise ValueError(
            f"trust domain {name!r} has characters other than lowercase letters, digits, "
            f"'.', '-' and '_': {''.join(bad)!r}"
        )
    return name


def check_segment(what: str, segment: str) -> str:
    """``segment`` if it is a valid SPIFFE path segment, else ``ValueError`` naming ``what``."""
    if not segment:
        raise ValueError(f"{what} is empty")
    if segment in (".", ".."):
        raise ValueError(f"{what} is {segment!r}, which SPIFFE forbids as a path segment")
    if not _SEGMENT_CHARACTERS.fullmatch(segment):
        bad = sorted({c for c in segment if not _SEGMENT_CHARACTERS.fullmatch(c)})
        raise ValueError(
            f"{what} {segment!r} has characters other than letters, digits, '.', '-' and '_': "
            f"{''.join(bad)!r}"
        )
    return segment


@dataclass(frozen=True)
class SpiffeId:
    """A workload's identity; constructing one checks every part (``ValueError`` if invalid)."""

    trust_domain: str
    namespace: str
    service_account: str

    def __post_init__(self) -> None:
        check_trust_domain(self.trust_domain)
        check_segment("namespace", self.namespace)
        check_segment("service account", self.service_account)

    @property
    def principal(self) -> str:
        """Istio's principal: the ID without its scheme, ``td/ns/NS/sa/SA``."""
        return f"{self.trust_domain}/ns/{self.namespace}/sa/{self.service_account}"

    @property
    def uri(self) -> str:
        """The ID as the URI that goes in a certificate's SAN."""
        return SCHEME + self.principal

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """The ID of ``uri``, which must be exactly ``spiffe://td/ns/NS/sa/SA``.

        Raises ``ValueError`` with the precise reason otherwise.
        """
        if len(uri) > MAX_ID_LENGTH:
            raise ValueError(f"SPIFFE ID is longer than {MAX_ID_LENGTH} characters")
        if not uri.startswith(SCHEME):
            shown = uri if len(uri) <= 80 else uri[:77] + "..."
            raise ValueError(f"{shown!r} is not a SPIFFE ID: it does not start with {SCHEME!r}")
        rest = uri[len(SCHEME) :]
        for character, part in (("?", "a query"), ("#", "a fragment")):
            if character in rest:
                raise ValueError(f"SPIFFE ID {uri!r} has {part} ({character!r}); SPIFFE forbids it")
        trust_domain, slash, path = rest.partition("/")
        try:
            check_trust_domain(trust_domain)
        except ValueError as error:
            raise ValueError(f"SPIFFE ID {uri!r}: {error}") from None
        if not slash:
            raise ValueError(f"SPIFFE ID {uri!r} has no path; expected /ns/<namespace>/sa/<sa>")
        segments = path.split("/")
        for segment in segments:
            if not segment:
                raise ValueError(f"SPIFFE ID {uri!r} has an empty path segment")
            if segment in (".", ".."):
                raise ValueError(f"SPIFFE ID {uri!r} has a {segment!r} path segment")
        if len(segments) != 4 or segments[0] != "ns" or segments[2] != "sa":
            raise ValueError(
                f"SPIFFE ID {uri!r} is not of the form spiffe://<trust domain>/ns/<namespace>"
                "/sa/<service account>"
            )
        try:
            return cls(trust_domain, segments[1], segments[3])
        except ValueError as error:
            raise ValueError(f"SPIFFE ID {uri!r}: {error}") from None


def control_plane_identity(trust_domain: str) -> SpiffeId:
    """The control plane's own identity, on its xDS and API serving certificate."""
    return SpiffeId(trust_domain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT)
