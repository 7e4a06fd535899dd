"""The mesh's certificate authority: signs workload CSRs for identities callers have proven.

Two kinds: a self-managed root (EC P-256, 10 years) made on first start and kept in a directory
(``load_or_create``), which can be rotated (stage a new root, which joins the trust bundle but does
not sign; activate it once every workload trusts it; retire the old one once every leaf is
re-issued); or the user's own root or intermediate (``from_files``, Istio's plug-in CA), which the
user rotates themselves. Either way the identity in a leaf is the one the caller proved, never the
one the CSR asks for.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509

from tulle.security import certificates as certs
from tulle.security.keys import (
    CsrRefused,
    PrivateKey,
    PublicKey,
    key_weakness,
    load_private_key,
    new_private_key,
    read_csr,
    requested_identities,
    requested_other_names,
)
from tulle.security.rootstore import RootState, RootStore, StoredRoot
from tulle.security.spiffe import SpiffeId, check_trust_domain, control_plane_identity

SERVER_HOSTS = ("localhost", "127.0.0.1")  # always on the control plane's serving certificate
DEFAULT_LEAF_LIFETIME = timedelta(hours=24)


class CaError(ValueError):
    """The CA cannot be loaded, or cannot do what was asked; the message says why."""


@dataclass(frozen=True)
class IssuedCertificate:
    """A signed leaf and the chain to send with it (leaf first, then intermediates; no root)."""

    chain_pem: bytes
    leaf: x509.Certificate
    identity: SpiffeId

    @property
    def serial(self) -> int:
        """The leaf's serial number."""
        return self.leaf.serial_number

    @property
    def not_before(self) -> datetime:
        """When the leaf starts being valid (aware, UTC)."""
        return self.leaf.not_valid_before_utc

    @property
    def not_after(self) -> datetime:
        """When the leaf expires (aware, UTC)."""
        return self.leaf.not_valid_after_utc


@dataclass(frozen=True)
class _Signing:
    """What the CA signs with, replaced whole on rotation so that a reader sees one state."""

    certificate: x509.Certificate
    key: PrivateKey
    intermediates: tuple[x509.Certificate, ...]  # sent after the leaf: signer (if not a root) up
    roots: tuple[x509.Certificate, ...]
    expires: datetime  # the earliest expiry on the path from the signer to its root


def _now(now: datetime | None) -> datetime:
    """``now``, or the current time (aware, UTC)."""
    return datetime.now(UTC) if now is None else now


def _signing_from_roots(state: RootState) -> _Signing:
    """The signing state of a self-managed CA in ``state``."""
    active = state.active.certificate
    return _Signing(
        active,
        state.active.key,
        (),
        tuple(root.certificate for root in state.trusted),
        active.not_valid_after_utc,
    )


class CertificateAuthority:
    """Issues workload certificates and knows the trust bundle. Thread-safe."""

    def __init__(
        self, trust_domain: str, signing: _Signing, store: RootStore | None, state: RootState | None
    ) -> None:
        """Use ``load_or_create`` or ``from_files``."""
        self.trust_domain = check_trust_domain(trust_domain)
        self._signing = signing
        self._store = store
        self._state = state
        self._lock = threading.Lock()

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def load_or_create(
        cls, directory: Path, trust_domain: str, *, now: datetime | None = None
    ) -> CertificateAuthority:
        """The self-managed CA kept in ``directory``: read back, or made (and saved) on first start.

        Raises ``CaStoreError`` (a ``ValueError``) when the directory holds a broken CA.
        """
        check_trust_domain(trust_domain)
        store = RootStore(directory)
        state = store.load()
        if state is None:
            key = new_private_key()
            root = StoredRoot(certs.build_root(key, trust_domain, _now(now)), key)
            state = RootState(root, None, (root,))
            store.save(state)
        return cls(trust_domain, _signing_from_roots(state), store, state)

    @classmethod
    def from_files(
        cls,
        cert: Path,
        key: Path,
        chain: Path | None,
        *,
        trust_domain: str,
        now: datetime | None = None,
    ) -> CertificateAuthority:
        """The user's own root or intermediate (Istio's plug-in CA: ``--ca-cert --ca-key
        --ca-chain``).

        ``chain`` holds the certificates from ``cert``'s issuer up to the root, root included
        (``cert`` itself may lead it, as in Istio's cert-chain.pem); it is needed unless ``cert``
        is a root. Further self-signed certificates in it are trusted too (a user's own root
        rotation). Raises ``CaError`` when the key is not ``cert``'s, ``cert`` is not a CA, is
        expired, or the chain does not lead to a root.
        """
        current = _now(now)
        try:
            certificate = certs.load_certificates(cert.read_bytes(), f"CA certificate {cert}")[0]
            signer_key = load_private_key(key.read_bytes(), f"CA key {key}")
            chained = (
                certs.load_certificates(chain.read_bytes(), f"CA chain {chain}") if chain else []
            )
        except (OSError, ValueError) as error:
            raise CaError(str(error)) from None
        _check_user_ca(certificate, signer_key, cert, key, current)
        chained = [c for c in chained if c != certificate]
        path = [certificate]
        while not certs.is_self_signed(path[-1]):
            issuer = next((c for c in chained if certs.issued_by(path[-1], c)), None)
            if issuer in path:
                raise CaError(
                    f"the CA chain {chain} loops back to {issuer.subject.rfc4514_string()!r}"
                )
            if issuer is None:
                raise CaError(
                    f"no certificate in {chain or 'the CA chain (none given)'} signed "
                    f"{path[-1].subject.rfc4514_string()!r}: --ca-chain must lead from "
                    f"{cert} up to its root, root included"
                )
            if not certs.is_ca(issuer):
                raise CaError(f"{issuer.subject.rfc4514_string()!r} in {chain} is not a CA")
            path.append(issuer)
        root = path[-1]
        roots = [root] + [c for c in chained if c != root and certs.is_self_signed(c)]
        signing = _Signing(
            certificate,
            signer_key,
            tuple(path[:-1]),
            tuple(roots),
            min(c.not_valid_after_utc for c in path),
        )
        return cls(trust_domain, signing, None, None)

    # -- what the CA trusts --------------------------------------------------------------------

    @property
    def roots(self) -> list[x509.Certificate]:
        """Every root in the trust bundle (a self-managed CA: the signer first)."""
        return list(self._signing.roots)

    def trust_bundle_pem(self) -> bytes:
        """The trusted roots as concatenated PEM: what every workload verifies peers with."""
        return certs.certificates_pem(self._signing.roots)

    @property
    def signer(self) -> x509.Certificate:
        """The certificate that signs leaves now."""
        return self._signing.certificate

    @property
    def staged_root(self) -> x509.Certificate | None:
        """The root staged to sign next (trusted, not yet signing), if any."""
        staged = None if self._state is None else self._state.staged
        return None if staged is None else staged.certificate

    @property
    def is_plugin(self) -> bool:
        """True for the user's own CA (``from_files``), which Tulle does not rotate."""
        return self._store is None

    # -- issuing -------------------------------------------------------------------------------

    def issue(
        self,
        csr_pem: bytes,
        identity: SpiffeId,
        lifetime: timedelta = DEFAULT_LEAF_LIFETIME,
        *,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """A leaf for the key of ``csr_pem``, naming ``identity``: the caller's proven identity.

        The CSR may ask for no SAN or for exactly ``identity``; anything else, like an invalid CSR,
        is refused with ``CsrRefused`` and the reason.
        """
        if identity.trust_domain != self.trust_domain:
            raise CsrRefused(
                f"the CA issues for trust domain {self.trust_domain}, not for {identity}"
            )
        request = read_csr(csr_pem)
        others = requested_other_names(request)
        if others:
            raise CsrRefused(
                f"CSR asks for {', '.join(others)}; a workload certificate names only the "
                f"caller's SPIFFE ID {identity}",
                wrong_identity=True,
            )
        for asked in requested_identities(request):
            if asked != identity.uri:
                raise CsrRefused(
                    f"CSR asks for {asked} but the caller is {identity}", wrong_identity=True
                )
        public_key = request.public_key()
        assert isinstance(public_key, PublicKey)  # read_csr accepts no other key
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(identity.uri)]
        return self._sign(public_key, names, identity, lifetime, _now(now))

    def issue_server_certificate(
        self,
        public_key: PublicKey,
        hosts: Iterable[str] = (),
        lifetime: timedelta = DEFAULT_LEAF_LIFETIME,
        *,
        now: datetime | None = None,
    ) -> IssuedCertificate:
        """The control plane's own serving certificate (xDS, API): its SPIFFE ID
        (``ns/tulle-system/sa/tulle-controlplane``), ``localhost``, ``127.0.0.1`` and ``hosts``
        (DNS names or IP addresses it listens on) as SANs, so clients can check it either way.
        """
        problem = key_weakness(public_key)
        if problem:
            raise ValueError(f"server key refused: {problem}")
        identity = control_plane_identity(self.trust_domain)
        all_hosts = list(dict.fromkeys([*SERVER_HOSTS, *hosts]))
        names = [x509.UniformResourceIdentifier(identity.uri), *certs.split_hosts(all_hosts)]
        return self._sign(public_key, names, identity, lifetime, _now(now))

    def _sign(
        self,
        public_key: PublicKey,
        names: list[x509.GeneralName],
        identity: SpiffeId,
        lifetime: timedelta,
        now: datetime,
    ) -> IssuedCertificate:
        """Sign a leaf valid from a minute ago for ``lifetime``, clamped to the signer's expiry."""
        if lifetime <= timedelta(0):
            raise ValueError(f"certificate lifetime must be positive, not {lifetime}")
        signing = self._signing
        if now >= signing.expires:
            raise CaError(
                f"the CA certificate {signing.certificate.subject.rfc4514_string()!r} (or one "
                f"above it) expired at {signing.expires.isoformat()}; nothing can be issued"
            )
        not_after = min(now + lifetime, signing.expires)
        leaf = certs.build_leaf(
            signing.certificate,
            signing.key,
            public_key,
            names,
            now - certs.LEAF_BACKDATE,
            not_after,
        )
        chain = certs.certificates_pem([leaf, *signing.intermediates])
        return IssuedCertificate(chain, leaf, identity)

    # -- root rotation -------------------------------------------------------------------------

    def _rotatable_state(self, action: str) -> tuple[RootStore, RootState]:
        """The store and state of a self-managed CA; ``CaError`` for a plug-in CA."""
        if self._store is None or self._state is None:
            raise CaError(
                f"cannot {action}: this CA is the user's own (--ca-cert); rotate it by "
                "replacing those files (new root added to --ca-chain first)"
            )
        return self._store, self._state

    def _commit(self, store: RootStore, state: RootState) -> None:
        """Save ``state``, then sign and trust by it."""
        store.save(state)
        self._state = state
        self._signing = _signing_from_roots(state)

    def reload(self) -> bool:
        """Read the roots back from the store, which another writer replaced (another replica
        of the control plane took a rotation step); True when they changed. A plug-in CA is
        never reloaded. ``CaStoreError`` when the store is broken (the CA stays as it was)."""
        with self._lock:
            if self._store is None or self._state is None:
                return False
            state = self._store.load()
            if state is None:
                return False
            names = (state.active.name, state.staged and state.staged.name)
            current = (self._state.active.name, self._state.staged and self._state.staged.name)
            trusted = [root.name for root in state.trusted]
            if (names, trusted) == (current, [root.name for root in self._state.trusted]):
                return False
            self._state = state
            self._signing = _signing_from_roots(state)
            return True

    def stage_new_root(self, *, now: datetime | None = None) -> x509.Certificate:
        """Make a new root that joins the trust bundle but does not sign yet; saved at once.

        Activate it (``activate_staged_root``) once every workload has the new bundle.
        """
        with self._lock:
            store, state = self._rotatable_state("stage a new root")
            if state.staged is not None:
                raise CaError(
                    f"a new root is already staged ({state.staged.name}); activate it first"
                )
            key = new_private_key()
            staged = StoredRoot(certs.build_root(key, self.trust_domain, _now(now)), key)
            self._commit(store, RootState(state.active, staged, (*state.trusted, staged)))
            return staged.certificate

    def activate_staged_root(self) -> x509.Certificate:
        """Make the staged root the signer; the old one stays trusted until ``retire_roots``."""
        with self._lock:
            store, state = self._rotatable_state("activate a staged root")
            if state.staged is None:
                raise CaError("no root is staged to activate; stage_new_root() first")
            staged = state.staged
            trusted = (staged, *(root for root in state.trusted if root.name != staged.name))
            self._commit(store, RootState(staged, None, trusted))
            return staged.certificate

    def retire_roots(self) -> list[x509.Certificate]:
        """Drop from the trust bundle (and the disk) every root that neither signs nor is staged.

        Call it once every leaf signed by an old root has been re-issued: leaves of a retired
        root no longer verify. Returns the roots dropped (none when there were none to drop).
        """
        with self._lock:
            store, state = self._rotatable_state("retire roots")
            keep = {state.active.name} | ({state.staged.name} if state.staged else set())
            retired = [root for root in state.trusted if root.name not in keep]
            if retired:
                kept = tuple(root for root in state.trusted if root.name in keep)
                self._commit(store, RootState(state.active, state.staged, kept))
            return [root.certificate for root in retired]


def _check_user_ca(
    certificate: x509.Certificate, key: PrivateKey, cert_path: Path, key_path: Path, now: datetime
) -> None:
    """``CaError`` unless ``certificate`` is a CA valid at ``now`` whose key is ``key``."""
    subject = certificate.subject.rfc4514_string()
    if not certs.same_key(certificate, key):
        raise CaError(f"CA key {key_path} is not the key of CA certificate {cert_path}")
    if not certs.is_ca(certificate):
        raise CaError(f"{cert_path} ({subject!r}) is not a CA certificate (basicConstraints CA)")
    if not certs.may_sign_certificates(certificate):
        raise CaError(f"{cert_path} ({subject!r}) has a keyUsage without keyCertSign")
    if now >= certificate.not_valid_after_utc:
        raise CaError(
            f"CA certificate {cert_path} expired at {certificate.not_valid_after_utc.isoformat()}"
        )
    if now < certificate.not_valid_before_utc:
        raise CaError(
            f"CA certificate {cert_path} is not valid before "
            f"{certificate.not_valid_before_utc.isoformat()}"
        )
