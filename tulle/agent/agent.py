"""The certificate agent of a proxyless gRPC app: settings, the renewal loop and the files it
writes, and the app it may run as its child.

Renewal is :class:`~tulle.security.renewal.CertificateKeeper`'s, as in the sidecar and the
library; the agent gives it the transport (the CA's ``Sign`` call on the secure xDS port, with
the token read afresh for each call and the replica the agent serves, which the CA checks
against the token's) and writes each new certificate to the directory, the three files replaced
together (``files``). While the CA is away the files stay as they are: the certificate serves
until it expires.

A refusal before the first certificate (an unknown token, another replica's token, a CSR the CA
does not take) ends the agent with the CA's reason: waiting would not change it. After that,
every failure is retried with backoff and logged with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tulle.agent.files import replace_together, write_credentials
from tulle.agent.trust import TrustBundleWatch
from tulle.security.files import PUBLIC_FILE_MODE, UnsafeFileError, write_atomically
from tulle.security.grpc_token import wrap
from tulle.security.material import BUNDLE_FILE, WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import TokenFileError, read_token_file
from tulle.security.workload_pki import read_certificates
from tulle.xds.grpc_stream import GrpcStreamError, ca_signer, split_address
from tulle.xds.node import make_node_id
from tulle.xds.workload_ca import control_plane_context

log = logging.getLogger(__name__)

TOKEN_FILE = "xds-token"  # the bootstrap token as grpcio's jwt_token_file reads it
TOKEN_LIFETIME = timedelta(minutes=10)  # the envelope's exp: grpcio re-reads the file after it
# grpcio 1.85 reads the bootstrap's call_creds only with this set to true.
CALL_CREDS_FLAG = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"
# The CA's answers that waiting does not change: the agent's configuration is wrong.
_FINAL = frozenset({"UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"})


class AgentError(Exception):
    """The agent cannot run: the message names the option, file or peer and says why."""


@dataclass(frozen=True)
class AgentSettings:
    """What ``tulle agent`` was told: where the CA is, how to prove who it is, where to write."""

    xds: str  # HOST:PORT of the control plane's secure xDS port (the CA is served there)
    root_cert: Path  # the mesh's trust bundle: the control plane is verified with it
    token_file: Path  # the replica's bootstrap token (0600)
    directory: Path  # where the files go (made 0700)
    replica: str  # <pod>.<namespace>: the replica the token must have been issued to
    command: tuple[str, ...] = ()  # the app to run as a child, if any
    token_refresh: float = TOKEN_LIFETIME.total_seconds() / 2
    ip: str = "127.0.0.1"  # the node id's address (its pod's)

    @property
    def node_id(self) -> str:
        """The proxyless node the agent's trust-bundle stream subscribes as (its replica's)."""
        pod, _, namespace = self.replica.partition(".")
        return make_node_id("proxyless", self.ip, pod, namespace)

    def check(self) -> None:
        """``AgentError`` for settings that cannot work, before anything is written."""
        try:
            split_address(self.xds)
        except ValueError as error:
            raise AgentError(f"--xds: {error}") from None
        pod, _, namespace = self.replica.partition(".")
        if not pod or not namespace:
            raise AgentError(f"replica {self.replica!r} must be <pod>.<namespace>")
        try:
            read_certificates(self.root_cert.read_bytes(), f"--xds-root-cert {self.root_cert}")
        except OSError as error:
            raise AgentError(f"--xds-root-cert {self.root_cert}: {error.strerror}") from None
        except ValueError as error:
            raise AgentError(str(error)) from None
        self.token()
        if self.directory.exists() and not self.directory.is_dir():
            raise AgentError(f"--certs {self.directory} is not a directory")

    def token(self) -> str:
        """The bootstrap token; ``AgentError`` says why it cannot be read."""
        try:
            return read_token_file(self.token_file)
        except (TokenFileError, UnsafeFileError) as error:
            raise AgentError(f"--token-file: {error}") from None
        except OSError as error:
            raise AgentError(f"--token-file {self.token_file}: {error.strerror}") from None


class CertificateAgent:
    """Keeps the certificate files in ``settings.directory`` fresh."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        # The control plane is verified with --root-cert, then with the bundle of each
        # certificate received: after a root rotation its own certificate is the new root's.
        self._control_plane = ssl.create_default_context(cafile=str(settings.root_cert))
        signer = ca_signer(settings.xds, lambda: self._control_plane, settings.token)
        self.refusal: GrpcStreamError | None = None  # the CA's last final answer, if any
        self.refused = asyncio.Event()

        async def sign(request: bytes) -> bytes:
            body = json.loads(request)
            body["replica"] = settings.replica  # the CA refuses another replica's token
            try:
                answer = await signer(json.dumps(body).encode())
            except GrpcStreamError as error:
                if error.code in _FINAL:
                    self.refusal = error
                    self.refused.set()
                raise
            self.refusal = None
            return answer

        self.keeper = CertificateKeeper(sign)
        self.keeper.on_update(self._write)
        self.bundle = b""  # the bundle root-cert.pem holds
        # The ROOTCA push of a root rotation, on a stream of its own (grpcio's is its own).
        self.trust = TrustBundleWatch(
            settings.xds,
            settings.node_id,
            lambda: self._control_plane,
            settings.token,
            self._bundle_pushed,
        )

    def _write(self, credentials: WorkloadCredentials) -> None:
        directory = self.settings.directory
        write_credentials(directory, credentials)
        self.bundle = credentials.bundle_pem
        self._control_plane = control_plane_context(credentials.bundle_pem)
        self.write_token()
        log.info(
            "wrote %s serial %x (valid until %s) to %s",
            credentials.identity,
            credentials.serial,
            credentials.not_after.isoformat(timespec="seconds"),
            directory,
        )

    def _bundle_pushed(self, bundle: bytes) -> None:
        """The control plane pushed the mesh's trust bundle (a root rotation step): a new one
        goes to ``root-cert.pem`` at once (grpcio's file_watcher trusts a staged root from its
        next refresh, before any leaf it signs arrives), and the certificate is renewed within
        seconds, which brings the bundle and, once the new root is active, a leaf of it."""
        if self.keeper.current is None or bundle == self.bundle:
            return  # before the first certificate its own bundle is written with it
        replace_together(self.settings.directory, [(BUNDLE_FILE, bundle, PUBLIC_FILE_MODE)])
        self.bundle = bundle
        log.info("the mesh's trust bundle changed: rewrote %s", BUNDLE_FILE)
        self.keeper.bundle_changed(bundle)

    def write_token(self) -> None:
        """(Re)write the token file grpcio's xDS client sends, with a fresh ``exp``; a token
        file that cannot be read now leaves the last one and is logged."""
        try:
            token = self.settings.token()
        except AgentError as error:
            log.warning("%s; %s keeps the last token", error, TOKEN_FILE)
            return
        if token.count(".") != 2:  # a bootstrap token, in the JWT shape grpcio insists on
            token = wrap(token, datetime.now(UTC) + TOKEN_LIFETIME)
        # else a Kubernetes service-account token: a JWT already, whose own exp the kubelet
        # renews long before; rewritten as it is now, grpcio picks up each new one.
        write_atomically(self.settings.directory / TOKEN_FILE, token.encode())

    async def refresh_token(self) -> None:
        """Rewrite the token file before grpcio's copy expires (and so pick up a new token)."""
        while True:
            await asyncio.sleep(self.settings.token_refresh)
            if self.keeper.current is not None:
                self.write_token()

    async def first_certificate(self, stop: asyncio.Event) -> bool:
        """Wait for the first certificate; False when ``stop`` came first. ``AgentError`` with
        the CA's reason when it refused the agent's credential or request."""
        waits = [
            asyncio.ensure_future(self.keeper.ready.wait()),
            asyncio.ensure_future(self.refused.wait()),
            asyncio.ensure_future(stop.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
        if self.keeper.ready.is_set():
            return True
        if self.refusal is not None:
            raise AgentError(f"no certificate from the CA at {self.settings.xds}: {self.refusal}")
        return False


async def _run_child(command: tuple[str, ...], stop: asyncio.Event) -> int:
    """Run the app until it exits (its exit code) or ``stop`` (then SIGTERM, and its code)."""
    env = dict(os.environ)
    env.setdefault(CALL_CREDS_FLAG, "true")
    try:
        child = await asyncio.create_subprocess_exec(*command, env=env)
    except OSError as error:
        raise AgentError(f"cannot run {command[0]!r}: {error.strerror}") from None
    log.info("started %s (pid %d)", " ".join(command), child.pid)
    waiting = asyncio.ensure_future(child.wait())
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not waiting.done():
        with contextlib.suppress(ProcessLookupError):
            child.send_signal(signal.SIGTERM)
    code = await waiting
    log.info("%s exited with %d", command[0], code)
    return code if code >= 0 else 128 - code


async def run(settings: AgentSettings) -> int:
    """Run the agent until SIGTERM/SIGINT (0) or its child's exit (the child's code)."""
    settings.check()
    agent = CertificateAgent(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [
        asyncio.create_task(agent.keeper.run(), name="renewal"),
        asyncio.create_task(agent.refresh_token(), name="token"),
        asyncio.create_task(agent.trust.run(), name="trust bundle"),
    ]
    try:
        if not await agent.first_certificate(stop):
            return 0
        print(f"tulle agent: certificates in {settings.directory}", flush=True)
        if settings.command:
            return await _run_child(settings.command, stop)
        await stop.wait()
        return 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


__all__ = ["TOKEN_FILE", "AgentError", "AgentSettings", "CertificateAgent", "run"]
