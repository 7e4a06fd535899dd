"""Keeping a workload's certificate fresh: the loop every workload (sidecar, library, ``tulle
agent``) runs. It makes a new key for each certificate (the key never leaves the process), asks
the CA through ``sign`` (the caller supplies the transport: a CSR's JSON in, the CA's JSON
answer out), renews at about half the lifetime, retries with backoff while the CA is away, and
tells its listeners of every new certificate. While the CA is unreachable the current certificate
serves until it expires; after that :meth:`CertificateKeeper.problem` says why the workload
fails closed, until a new certificate arrives. When the control plane pushes a new trust bundle
(a step of a root rotation) the keeper renews within seconds rather than at half life."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from tulle.security.material import WorkloadCredentials
from tulle.security.rotation import RetrySchedule, renewal_time
from tulle.security.spiffe import SpiffeId
from tulle.security.workload_pki import make_csr_pem, new_key_pem

log = logging.getLogger(__name__)

BUNDLE_RENEWAL_SPREAD = 2.0
"""Seconds over which workloads renew after the control plane pushes a new trust bundle."""

Sign = Callable[[bytes], Awaitable[bytes]]
"""The transport to the CA: a request's JSON (``{"csr": PEM}``) in, the answer's JSON out; raises
an exception whose text says why when the CA refuses or cannot be reached."""


def _now() -> datetime:
    return datetime.now(UTC)


class CertificateKeeper:
    """The workload's current credentials, renewed in the background by :meth:`run`."""

    def __init__(
        self,
        sign: Sign,
        identity: SpiffeId | None = None,
        retry: RetrySchedule | None = None,
        clock: Callable[[], datetime] = _now,
        rng: random.Random | None = None,
    ) -> None:
        self.sign = sign
        self.identity = identity  # asked for in the CSR when known (the CA decides anyway)
        self.retry = retry or RetrySchedule()
        self.clock = clock
        self.rng = rng or random.Random()
        self.current: WorkloadCredentials | None = None
        self.ready = asyncio.Event()
        self.renewals = 0  # certificates received after the first
        self.failures = 0  # sign attempts that failed
        self.last_error = ""
        self._listeners: list[Callable[[WorkloadCredentials], None]] = []
        self._wake = asyncio.Event()  # set: renew now (the trust bundle changed)
        self._early: asyncio.TimerHandle | None = None

    def on_update(self, listener: Callable[[WorkloadCredentials], None]) -> None:
        """Call ``listener`` with each new certificate (and at once with the current one)."""
        self._listeners.append(listener)
        if self.current is not None:
            listener(self.current)

    def bundle_changed(self, bundle_pem: bytes) -> None:
        """The control plane pushed its trust bundle (a root rotation step): when it is not the
        bundle this workload holds, renew within :data:`BUNDLE_RENEWAL_SPREAD` seconds (spread
        so that workloads do not all ask the CA at once), which brings the new bundle, and a
        leaf of the new signer. Called on the keeper's event loop."""
        current = self.current
        if current is None or current.bundle_pem == bundle_pem or self._early is not None:
            return
        delay = self.rng.uniform(0, BUNDLE_RENEWAL_SPREAD)
        log.info("the mesh's trust bundle changed; renewing in %.1fs", delay)
        self._early = asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _sleep(self, seconds: float) -> None:
        """Wait ``seconds``, or less when :meth:`bundle_changed` asks for an early renewal."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), max(0.0, seconds))
        self._wake.clear()
        if self._early is not None:
            self._early.cancel()
            self._early = None

    def problem(self) -> str | None:
        """Why the workload cannot prove who it is now (None: it can)."""
        current = self.current
        if current is None:
            detail = f": {self.last_error}" if self.last_error else ""
            return f"no valid workload certificate (none issued yet{detail})"
        if current.expired(self.clock()):
            detail = f"; the CA: {self.last_error}" if self.last_error else ""
            return (
                "no valid workload certificate "
                f"(expired {current.not_after.isoformat(timespec='seconds')}{detail})"
            )
        return None

    async def renew_once(self) -> WorkloadCredentials:
        """Ask for a new certificate now; raises why not (the current one stays)."""
        key_pem = new_key_pem()
        csr = make_csr_pem(key_pem, self.identity)
        answer = await self.sign(json.dumps({"csr": csr.decode()}).encode())
        credentials = _credentials(key_pem, answer)
        first = self.current is None
        self.current = credentials
        if not first:
            self.renewals += 1
        self.last_error = ""
        for listener in list(self._listeners):
            listener(credentials)
        self.ready.set()
        log.info(
            "workload certificate %s serial %x valid until %s",
            credentials.identity,
            credentials.serial,
            credentials.not_after.isoformat(timespec="seconds"),
        )
        return credentials

    async def run(self) -> None:
        """Renew forever: at about half of each certificate's life, retrying with backoff."""
        attempt = 0
        while True:
            try:
                credentials = await self.renew_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # any failure of the CA or of the way there: retried
                self.failures += 1
                self.last_error = str(error) or type(error).__name__
                current = self.current
                wait = self.retry.delay(
                    attempt, self.clock(), current.not_after if current else None, self.rng
                )
                attempt += 1
                log.warning(
                    "workload certificate not renewed (%s); retrying in %.1fs",
                    self.last_error,
                    wait.total_seconds(),
                )
                await self._sleep(wait.total_seconds())
                continue
            attempt = 0
            # From when it arrived, not from not_before (the CA backdates it for clock skew).
            received = max(credentials.not_before, self.clock())
            due = renewal_time(received, credentials.not_after, self.rng)
            await self._sleep((due - self.clock()).total_seconds())

    def status(self) -> dict[str, Any]:
        """What ``tulle proxy-status`` and the admin port show (no key material)."""
        current = self.current
        data: dict[str, Any] = {
            "renewals": self.renewals,
            "failures": self.failures,
            "lastError": self.last_error,
        }
        if current is not None:
            data.update(
                identity=current.identity.uri,
                serial=f"{current.serial:x}",
                notBefore=current.not_before.isoformat(),
                notAfter=current.not_after.isoformat(),
                expired=current.expired(self.clock()),
            )
        return data


def _credentials(key_pem: bytes, answer: bytes) -> WorkloadCredentials:
    """The credentials of the CA's JSON answer; ValueError says what is wrong with it."""
    try:
        data = json.loads(answer)
        chain, bundle = data["certChain"].encode(), data["trustBundle"].encode()
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError("the CA's answer is not {certChain, trustBundle} JSON") from None
    return WorkloadCredentials.from_pem(key_pem, chain, bundle)
