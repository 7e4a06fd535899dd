"""Root rotation of the self-managed mesh CA, as an operator drives it through the HTTP API
(``/api/v1/ca``) and ``tulle ca``: stage a new root, activate it, retire the old one.

Each step is refused, with the reason and the workloads it waits for, while it is not safe yet:

- **activate** needs a staged root, and every workload in use (a node connected over the secure
  xDS port with a certificate that has not expired) must hold a trust bundle with that root:
  otherwise a workload would meet a peer's leaf signed by a root it does not trust yet;
- **retire** needs every workload in use to hold a leaf signed by the active root: a leaf of a
  retired root no longer verifies anywhere.

``force`` skips the wait (not the other checks). A workload learns of each step at once: the
control plane publishes the bundle in ``root-cert.pem`` and pushes it over ADS (the ``ROOTCA``
secret), and each sidecar or library app then renews its certificate within a couple of seconds
(:meth:`tulle.security.renewal.CertificateKeeper.bundle_changed`), which is what the waits see in
the CA's records. A plug-in CA (the user's own, ``--ca-cert``) is not rotated by Tulle: every
step is refused with what to do instead."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509

from tulle.control.certificates import CertificateService
from tulle.security.ca import CaError, CertificateAuthority
from tulle.security.rootstore import root_name
from tulle.transport.http_server import Response, error_response, json_response
from tulle.xds.server import Connection

log = logging.getLogger(__name__)

PLUGIN_REFUSAL = (
    "this control plane signs with your own CA (--ca-cert): Tulle does not rotate a CA it does "
    "not own. Rotate its root yourself: add the new root to --ca-chain and restart (both roots "
    "trusted), then switch --ca-cert/--ca-key to a CA under the new root and restart, and drop "
    "the old root from --ca-chain once every workload has renewed (docs/security.md, Rotation)"
)


class RotationRefused(Exception):  # noqa: N818 (named for the outcome)
    """A rotation step that may not be taken now: why, and what it waits for."""

    def __init__(self, reason: str, waiting_for: list[str] | None = None) -> None:
        super().__init__(reason)
        self.waiting_for = waiting_for or []


@dataclass(frozen=True)
class Holder:
    """A workload in use: a connected secure node and the last certificate the CA gave it."""

    replica: str
    node: str
    record: Mapping[str, Any] | None  # None: no certificate issued to it by this control plane


def _describe(certificate: x509.Certificate, role: str) -> dict[str, str]:
    return {
        "name": root_name(certificate),
        "role": role,
        "subject": certificate.subject.rfc4514_string(),
        "serial": f"{certificate.serial_number:x}",
        "notBefore": certificate.not_valid_before_utc.isoformat(),
        "notAfter": certificate.not_valid_after_utc.isoformat(),
    }


class RootRotation:
    """The rotation state as the API shows it, and the steps, each checked first."""

    def __init__(
        self,
        ca: CertificateAuthority,
        signing: CertificateService,
        connections: Callable[[], Mapping[int, Connection]],
        changed: Callable[[], None],
    ) -> None:
        self.ca = ca
        self.signing = signing
        self.connections = connections
        self.changed = changed  # publish the new bundle (file and ADS push)

    # -- what is in use --------------------------------------------------------------------

    def holders(self, now: datetime | None = None) -> list[Holder]:
        """The workloads in use: nodes connected over the secure port, with their certificate
        (left out: those whose certificate has expired, which can speak mTLS to nobody and get
        the bundle in force with their next one)."""
        now = now or datetime.now(UTC)
        found: dict[str, Holder] = {}
        for connection in self.connections().values():
            if not connection.secure:
                continue
            node = connection.node
            replica = f"{node.pod}.{node.namespace}"
            record = self.signing.issued.get(replica)
            if record is not None and datetime.fromisoformat(record["notAfter"]) <= now:
                continue
            found[replica] = Holder(replica, node.id, record)
        return [found[key] for key in sorted(found)]

    def _roots(self) -> tuple[str, str | None, list[str]]:
        """The names of the active root, the staged one and every trusted root."""
        staged = self.ca.staged_root
        return (
            root_name(self.ca.roots[0]),  # the signer's root (a self-managed CA: the signer)
            None if staged is None else root_name(staged),
            [root_name(root) for root in self.ca.roots],
        )

    def waiting_to_activate(self, staged: str) -> list[str]:
        """The workloads in use that do not trust the staged root yet, each with why."""
        waiting = []
        for holder in self.holders():
            if holder.record is None:
                waiting.append(f"{holder.replica}: no certificate from this control plane yet")
            elif staged not in holder.record["trusts"]:
                waiting.append(
                    f"{holder.replica}: its trust bundle (sent with serial "
                    f"{holder.record['serial']}) lacks the staged root {staged}"
                )
        return waiting

    def waiting_to_retire(self, active: str) -> list[str]:
        """The workloads in use whose leaf is not signed by the active root, each with why."""
        waiting = []
        for holder in self.holders():
            if holder.record is None:
                waiting.append(f"{holder.replica}: no certificate from this control plane yet")
            elif holder.record["root"] != active:
                waiting.append(
                    f"{holder.replica}: its certificate (serial {holder.record['serial']}, "
                    f"valid until {holder.record['notAfter']}) is signed by root "
                    f"{holder.record['root']}, not the active {active}"
                )
        return waiting

    # -- status ----------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The roots, each workload's certificate, the rotation's phase and its next step."""
        active, staged, trusted = self._roots()
        roles = dict.fromkeys(trusted, "retiring") | {active: "active"}
        if staged is not None:
            roles[staged] = "staged"
        holders = self.holders()
        if self.ca.is_plugin:
            phase, step, waiting = "plug-in", None, [PLUGIN_REFUSAL]
        elif staged is not None:
            phase, step, waiting = "staged", "activate", self.waiting_to_activate(staged)
        elif len(trusted) > 1:
            phase, step, waiting = "activated", "retire", self.waiting_to_retire(active)
        else:
            phase, step, waiting = "idle", "stage", []
        settled = all(h.record is not None and h.record["trusts"] == trusted for h in holders)
        return {
            "ca": "plug-in" if self.ca.is_plugin else "self-managed",
            "trustDomain": self.ca.trust_domain,
            "phase": phase,
            "active": active,
            "staged": staged,
            "roots": [_describe(root, roles[root_name(root)]) for root in self.ca.roots],
            "next": {
                "step": step,
                "ready": step is not None and not waiting,
                "waitingFor": waiting,
            },
            "settled": settled,
            "workloads": [
                {"replica": h.replica, "node": h.node, **(h.record or {"issued": "none yet"})}
                for h in holders
            ],
        }

    # -- the steps -------------------------------------------------------------------------

    def _check_self_managed(self) -> None:
        if self.ca.is_plugin:
            raise RotationRefused(PLUGIN_REFUSAL)

    def stage(self) -> dict[str, Any]:
        """Make a new root, trusted everywhere from now on but signing nothing yet."""
        self._check_self_managed()
        active, staged, trusted = self._roots()
        if staged is not None:
            raise RotationRefused(f"root {staged} is staged already: activate it next")
        if len(trusted) > 1:
            old = ", ".join(name for name in trusted if name != active)
            raise RotationRefused(f"the previous rotation is not finished: retire root {old} first")
        root = self.ca.stage_new_root()
        log.warning("CA: staged new root %s (trusted from now on; %s still signs)",
                    root_name(root), active)  # fmt: skip
        self.changed()
        return self.status()

    def activate(self, force: bool = False) -> dict[str, Any]:
        """Make the staged root the signer, once every workload in use trusts it."""
        self._check_self_managed()
        _, staged, _ = self._roots()
        if staged is None:
            raise RotationRefused("no root is staged: stage a new root first")
        waiting = self.waiting_to_activate(staged)
        if waiting and not force:
            raise RotationRefused(
                f"not every workload trusts the staged root {staged} yet; a workload renews "
                "within seconds of a new bundle, retry shortly (force skips this check: "
                "workloads without the root then refuse leaves it signs)",
                waiting,
            )
        try:
            root = self.ca.activate_staged_root()
        except CaError as error:
            raise RotationRefused(str(error)) from None
        log.warning("CA: root %s now signs (forced: %s, waited for: %s)",
                    root_name(root), force, waiting or "nobody")  # fmt: skip
        self.changed()
        return self.status()

    def retire(self, force: bool = False) -> dict[str, Any]:
        """Drop every root but the active one from the bundle (and its key from the disk),
        once every workload in use holds a leaf the active root signed."""
        self._check_self_managed()
        active, staged, trusted = self._roots()
        if staged is not None:
            raise RotationRefused(f"root {staged} is staged, not active: activate it first")
        if len(trusted) == 1:
            raise RotationRefused(f"nothing to retire: root {active} is the only one trusted")
        waiting = self.waiting_to_retire(active)
        if waiting and not force:
            raise RotationRefused(
                "leaves signed by an old root are still valid and in use; a workload renews "
                "within seconds of an activation, retry shortly (force skips this check: "
                "those workloads then fail mTLS until they renew)",
                waiting,
            )
        retired = [root_name(root) for root in self.ca.retire_roots()]
        log.warning("CA: retired roots %s (forced: %s, waited for: %s)",
                    ", ".join(retired), force, waiting or "nobody")  # fmt: skip
        self.changed()
        return self.status()

    # -- HTTP ------------------------------------------------------------------------------

    def respond(self, method: str, step: str, force: bool) -> Response:
        """The API's answer to ``GET /api/v1/ca`` (``step`` empty) or ``POST
        /api/v1/ca/<stage|activate|retire>``: the status after the step, or 409 and why not."""
        if not step:
            if method != "GET":
                return error_response(405, f"{method} is not allowed on /api/v1/ca; use GET")
            return json_response(self.status())
        steps: dict[str, Callable[[], dict[str, Any]]] = {
            "stage": self.stage,
            "activate": lambda: self.activate(force),
            "retire": lambda: self.retire(force),
        }
        action = steps.get(step)
        if action is None:
            return error_response(
                404, f"no CA step {step[:40]!r}; steps: {', '.join(steps)} (POST)"
            )
        if method != "POST":
            return error_response(405, f"{method} is not allowed on /api/v1/ca/{step}; use POST")
        try:
            return json_response(action())
        except RotationRefused as refusal:
            return error_response(409, f"{step} refused: {refusal}", waitingFor=refusal.waiting_for)
