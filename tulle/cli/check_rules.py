"""What ``tulle check`` warns about, as pure functions of what it read (the control plane's
metrics, proxy-status and config; the workloads' metrics), so each rule is tested without a
mesh:

- a root of the trust bundle expires within 60 days (or has expired);
- a node's certificate has expired, or is past the point where it should have been renewed;
- a workload refused callers that are not in the mesh (plain text, or TLS without a mesh
  certificate, at a STRICT port), or serves plain-text callers;
- an AuthorizationPolicy names a principal that no workload has.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT_WARNING = timedelta(days=60)
BACKDATE = timedelta(minutes=1)  # the CA backdates every leaf this much against clock skew
RENEW_BY = 0.75  # renewal is due at 45-55 % of a certificate's life; warn past 75 %
ROOT_GAUGE = "tulle_ca_root_expiration_timestamp_seconds"
REFUSED = "tulle_inbound_tls_refused_total"
REQUESTS = "tulle_requests_total"
DEFAULT_TRUST_DOMAIN = "cluster.local"


@dataclass(frozen=True)
class Finding:
    """One finding: ``topic`` (``root``, ``certificate``, ``mtls``, ``policy``) and what to
    tell the user."""

    topic: str
    message: str


def _samples(exposition: str, name: str) -> Iterable[tuple[dict[str, str], float]]:
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name:
                yield sample.labels, sample.value


def _samples_of(pages: Iterable[str], name: str) -> Iterable[tuple[dict[str, str], float]]:
    for page in pages:
        yield from _samples(page, name)


def _when(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _left(delta: timedelta) -> str:
    days = delta.total_seconds() / 86400
    return f"{days:.0f} days" if days >= 2 else f"{delta.total_seconds() / 3600:.1f} hours"


def root_warnings(exposition: str, now: datetime) -> list[Finding]:
    """Roots of the trust bundle (the control plane's gauge) that expire within 60 days."""
    found = []
    for labels, value in _samples(exposition, ROOT_GAUGE):
        expires = datetime.fromtimestamp(value, now.tzinfo)
        root = f"root CA {labels.get('subject', '?')} (serial {labels.get('serial', '?')})"
        if expires <= now:
            found.append(
                Finding(
                    "root",
                    f"{root} expired {_when(expires)}: no certificate it "
                    "signed verifies; rotate the root",
                )
            )
        elif expires - now <= ROOT_WARNING:
            found.append(
                Finding(
                    "root",
                    f"{root} expires {_when(expires)} (in "
                    f"{_left(expires - now)}): rotate it now "
                    "(`tulle ca rotate`; a plug-in CA: replace its files)",
                )
            )
    return found


def certificate_warnings(nodes: Iterable[Mapping[str, Any]], now: datetime) -> list[Finding]:
    """Nodes (proxy-status) whose certificate, as the CA last issued it, has expired, or is
    past 75 % of its life: a workload renews at about half, so it has failed to since."""
    found = []
    for node in nodes:
        certificate = node.get("certificate")
        if not certificate or "notAfter" not in certificate:
            continue
        name = node.get("node", "?")
        expires = datetime.fromisoformat(certificate["notAfter"])
        if expires <= now:
            found.append(
                Finding(
                    "certificate",
                    f"node {name}: its certificate expired "
                    f"{_when(expires)}: it fails closed until the "
                    "CA issues it a new one",
                )
            )
            continue
        if "notBefore" not in certificate:
            continue
        issued = datetime.fromisoformat(certificate["notBefore"]) + BACKDATE
        life = expires - issued
        if life > timedelta(0) and now > issued + life * RENEW_BY:
            found.append(
                Finding(
                    "certificate",
                    f"node {name}: its certificate (issued "
                    f"{_when(issued)}) was due for renewal and was "
                    f"not renewed; it expires {_when(expires)} (in "
                    f"{_left(expires - now)}); see its log",
                )
            )
    return found


def mtls_warnings(
    scrapes: Mapping[str, Iterable[str]], strict: Collection[str] = ()
) -> list[Finding]:
    """From each workload's metrics (``scrapes``: workload → its replicas' pages): callers
    outside the mesh of a STRICT workload (``strict``: the workloads with a STRICT port). Its
    refusals say so: plain text (which only STRICT refuses, so counted whatever ``strict``
    says) and TLS without a certificate the mesh trusts; so do the plain-text requests it
    served (``connection_security_policy="none"``: at a port that is not STRICT, or before it
    became STRICT)."""
    found = []
    for workload, listed in sorted(scrapes.items()):
        pages = list(listed)
        refused: dict[str, float] = {}
        for labels, value in _samples_of(pages, REFUSED):
            reason = labels.get("reason", "")
            refused[reason] = refused.get(reason, 0.0) + value
        if refused.get("plain_text"):
            found.append(
                Finding(
                    "mtls",
                    f"workload {workload} is STRICT and refused {refused['plain_text']:.0f} "
                    "plain-text connections: callers outside the mesh call it; give them a "
                    "sidecar or the library, or make the port PERMISSIVE",
                )
            )
        if workload not in strict:
            continue
        if refused.get("handshake_failed"):
            found.append(
                Finding(
                    "mtls",
                    f"workload {workload} is STRICT and refused "
                    f"{refused['handshake_failed']:.0f} TLS connections whose client had no "
                    "mesh certificate (or one the mesh does not trust: another CA, expired, "
                    "another trust domain)",
                )
            )
        plain: dict[str, float] = {}
        for labels, value in _samples_of(pages, REQUESTS):
            if (
                labels.get("reporter") == "destination"
                and labels.get("connection_security_policy") == "none"
            ):
                caller = labels.get("source_workload", "unknown")
                plain[caller] = plain.get(caller, 0.0) + value
        if plain:
            callers = ", ".join(f"{name} ({count:.0f})" for name, count in sorted(plain.items()))
            found.append(
                Finding(
                    "mtls",
                    f"workload {workload} is STRICT but served plain-text requests (by claimed "
                    f"caller: {callers}), at a port that is not STRICT or before it became "
                    "STRICT: those callers are not in the mesh",
                )
            )
    return found


def strict_workloads(resources: Iterable[Mapping[str, Any]]) -> set[str]:
    """The Workloads with a STRICT port, by PeerAuthentication's precedence (the translator's
    own resolution); resources the config API refuses are left out."""
    from tulle.api.loader import load_documents
    from tulle.api.normalize import build_model
    from tulle.api.source import Document
    from tulle.control.translate.peer_authn import resolve

    loaded, _ = load_documents(Document("<control plane>", 0, dict(r)) for r in resources)
    model = build_model(item.resource for item in loaded)
    strict = set()
    for workload in model.workloads:
        policy = resolve(model, workload.namespace, workload.labels)
        ports = [port.port for port in workload.ports] or [0]
        if any(policy.for_port(port) == "STRICT" for port in ports):
            strict.add(workload.name)
    return strict


def known_principals(
    resources: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]] = (),
    identities: Iterable[str] = (),
) -> set[str]:
    """Every principal (``<trust domain>/ns/<namespace>/sa/<service account>``) a workload of
    the mesh has: the Workloads' (service account by default the workload's name), the
    ServiceEntry endpoints' with a ``serviceAccount``, the registered endpoints', and the
    SPIFFE ids of the certificates the CA issued (``identities``)."""
    items = list(resources)
    domain = DEFAULT_TRUST_DOMAIN
    for item in items:
        if item.get("kind") == "Mesh":
            domain = (item.get("spec") or {}).get("trustDomain") or domain
    found = set()
    for item in items:
        meta, spec = item.get("metadata") or {}, item.get("spec") or {}
        namespace = meta.get("namespace") or "default"
        if item.get("kind") == "Workload":
            account = spec.get("serviceAccount") or meta.get("name", "")
            found.add(f"{domain}/ns/{namespace}/sa/{account}")
        elif item.get("kind") == "ServiceEntry":
            for endpoint in spec.get("endpoints") or ():
                if endpoint.get("serviceAccount"):
                    found.add(f"{domain}/ns/{namespace}/sa/{endpoint['serviceAccount']}")
    for endpoint in endpoints:
        account = endpoint.get("service_account") or endpoint.get("serviceAccount")
        if account:
            found.add(f"{domain}/ns/{endpoint.get('namespace') or 'default'}/sa/{account}")
    for identity in identities:
        found.add(identity.removeprefix("spiffe://"))
    return found


def _matches(pattern: str, principal: str) -> bool:
    """Istio's principal match: exact, ``prefix*``, ``*suffix`` or ``*``."""
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return principal.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return principal.endswith(pattern[1:])
    return principal == pattern


def _named_principals(spec: Mapping[str, Any]) -> Iterable[tuple[str, str]]:
    """``(where, principal)`` of every principal an AuthorizationPolicy's rules name."""
    for number, rule in enumerate(spec.get("rules") or (), 1):
        for source in rule.get("from") or ():
            inner = source.get("source") or {}
            for field in ("principals", "notPrincipals"):
                for value in inner.get(field) or ():
                    yield f"rule {number} from.source.{field}", str(value)
        for condition in rule.get("when") or ():
            if condition.get("key") == "source.principal":
                for field in ("values", "notValues"):
                    for value in condition.get(field) or ():
                        yield f"rule {number} when source.principal {field}", str(value)


def policy_warnings(resources: Iterable[Mapping[str, Any]], principals: set[str]) -> list[Finding]:
    """AuthorizationPolicies naming a principal (or a pattern) that no workload has: a typo,
    or a workload that is gone; such a rule never matches."""
    found = []
    for item in resources:
        if item.get("kind") != "AuthorizationPolicy":
            continue
        meta = item.get("metadata") or {}
        policy = f"{meta.get('namespace') or 'default'}/{meta.get('name', '?')}"
        for where, named in _named_principals(item.get("spec") or {}):
            if not any(_matches(named, known) for known in principals):
                found.append(
                    Finding(
                        "policy",
                        f"AuthorizationPolicy {policy} ({where}) names "
                        f"principal {named!r}, which no workload has",
                    )
                )
    return found
