"""PeerAuthentication: which traffic a workload's ports accept (mTLS only, both, plain text only),
resolved with Istio's precedence (``ComposePeerAuthentication``):

1. the Mesh resource's ``mtls.mode`` (PERMISSIVE unless set) is the starting point;
2. a mesh-wide policy (root namespace, no selector) replaces it, unless its mode is UNSET;
3. a namespace policy (the workload's namespace, no selector) replaces that, unless UNSET;
4. a workload policy (the workload's namespace, a selector its labels satisfy) replaces that,
   unless UNSET; its ``portLevelMtls`` then sets single ports (UNSET there: the workload's mode).

A policy with a selector in the root namespace is none of these, and is ignored (as in Istio).
When several policies compete for one level, Istio takes the oldest; Tulle has no creation
times and takes the first by name, so the choice does not depend on the order of files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tulle.api.model import MeshModel, Pairs, PeerAuthenticationPolicy
from tulle.control.translate.policy import ROOT_NAMESPACES

Mode = Literal["STRICT", "PERMISSIVE", "DISABLE"]


@dataclass(frozen=True)
class MtlsPolicy:
    """The resolved mode of a workload, and the ports whose mode differs from it."""

    mode: Mode
    ports: tuple[tuple[int, Mode], ...] = field(default=())
    origin: str = ""  # ``PeerAuthentication ns/name`` that decided ``mode``, or "Mesh"

    def for_port(self, port: int) -> Mode:
        """The mode of the workload's port ``port``."""
        for number, mode in self.ports:
            if number == port:
                return mode
        return self.mode


def _checked(mode: str) -> Mode:
    if mode == "STRICT":
        return "STRICT"
    if mode == "DISABLE":
        return "DISABLE"
    return "PERMISSIVE"


def resolve(model: MeshModel, namespace: str, labels: Pairs | None) -> MtlsPolicy:
    """The PeerAuthentication that applies to a workload in ``namespace`` with ``labels``;
    ``labels`` None: the namespace's own mode (workload policies left out), as a client infers a
    service's mode (Istio's ``BestEffortInferServiceMTLSMode``)."""
    mesh: PeerAuthenticationPolicy | None = None
    space: PeerAuthenticationPolicy | None = None
    workload: PeerAuthenticationPolicy | None = None
    have = dict(labels or ()).items()
    ordered = sorted(model.peer_authentications, key=lambda p: (p.namespace, p.origin.name))
    for policy in ordered:
        if not policy.selector:
            if policy.namespace in ROOT_NAMESPACES:
                mesh = mesh or policy
            elif policy.namespace == namespace:
                space = space or policy
        elif (
            labels is not None
            and policy.namespace == namespace
            and policy.namespace not in ROOT_NAMESPACES
            and dict(policy.selector).items() <= have
        ):
            workload = workload or policy
    mode: Mode = _checked(model.settings.mtls_mode)
    origin = "Mesh"
    for level in (mesh, space, workload):
        if level is not None and level.mode != "UNSET":
            mode, origin = _checked(level.mode), str(level.origin)
    ports: list[tuple[int, Mode]] = []
    if workload is not None:
        for port, port_mode in workload.port_modes:
            ports.append((port, mode if port_mode == "UNSET" else _checked(port_mode)))
    return MtlsPolicy(mode, tuple(ports), origin)


def service_mode(model: MeshModel, namespace: str) -> Mode:
    """The mode a client assumes for the services of ``namespace`` (namespace or mesh-wide
    policy, else the Mesh default): auto mTLS sends plain text to a namespace that DISABLEs."""
    return resolve(model, namespace, None).mode
