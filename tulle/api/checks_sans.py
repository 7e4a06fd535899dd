"""A ServiceEntry's ``subjectAltNames`` that no server of the mesh can present: Tulle's
workload certificates carry one SAN, a SPIFFE id, so only ``spiffe://`` names take part in the
check of the server's identity; any other name (a DNS name, a bare account) is a WARNING that
says it is not used (TLS origination to other servers comes in a later issue)."""

from __future__ import annotations

from collections.abc import Iterator

from tulle.api.check_context import Context
from tulle.api.findings import Finding, Severity
from tulle.api.kinds import ServiceEntry


def check_subject_alt_names(ctx: Context) -> Iterator[Finding]:
    """One WARNING per subjectAltNames entry that is not a SPIFFE id."""
    for entry, item in ctx.of(ServiceEntry):
        for index, name in enumerate(entry.spec.subject_alt_names):
            if not name.startswith("spiffe://"):
                yield item.finding(
                    Severity.WARNING,
                    ("spec", "subjectAltNames", index),
                    f"{name!r} is not a SPIFFE id: the mesh's servers present only SPIFFE ids "
                    "(spiffe://<trust domain>/ns/<namespace>/sa/<account>), so it is not used "
                    "(TLS origination to other servers comes in a later issue)",
                )
