"""The admission webhooks' HTTPS listener (``tulle controlplane --webhook-port``): ``POST
/inject`` (the sidecar injector) and ``POST /validate`` (config validation), AdmissionReview v1
both (:mod:`tulle.control.admission`), and ``GET /healthz``.

Its certificate is issued by the mesh CA for the names the API server calls the webhook Service
by (``<service>.<namespace>.svc`` and ``<service>.<namespace>.svc.<cluster domain>``), so the
webhook configurations' caBundle is the mesh's root bundle (kept current by
:mod:`tulle.kube.webhooks`). It is renewed at half its life and at once when the trust bundle
changes (a root rotation), without a restart: the TLS context loads the new pair, and every
handshake after that uses it. The key is written 0600 in the state directory (Python's ssl
loads keys from files only)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tulle.control.admission import Handler, ReviewError, answer
from tulle.control.admission_validate import Validator
from tulle.control.serving import ServingCertificate
from tulle.kube.install.names import CONTROL_PLANE, INJECT_PATH, VALIDATE_PATH
from tulle.security.ca import CertificateAuthority
from tulle.security.files import PUBLIC_FILE_MODE, private_directory, write_atomically
from tulle.transport.http_server import (
    Request,
    Response,
    error_response,
    json_response,
    listening_port,
    serve_http,
    text_response,
)

log = logging.getLogger(__name__)

MAX_REVIEW_BYTES = 4 * 1024 * 1024
"""An AdmissionReview carries one object (and for an update, its old version); etcd's limit on
an object is 1.5 MiB."""
RENEW_CHECK_SECONDS = 30.0
"""How often the listener asks whether its certificate is due (the trust bundle changing
reissues it at once)."""
WEBHOOK_DIRECTORY = "webhook"


@dataclass(frozen=True)
class WebhookOptions:
    """Where the webhooks listen, the namespace and Service the control plane runs as (the
    certificate's names), and the injector: :func:`tulle.inject.admission.admit_pod` with the
    mesh settings, wrapped by the CLI (the parts of layer 4 do not import each other)."""

    port: int
    injector: Handler
    address: str = "127.0.0.1"
    namespace: str = "tulle-system"
    service: str = CONTROL_PLANE
    cluster_domain: str = "cluster.local"

    def dns_names(self) -> list[str]:
        """The names the API server reaches the webhook Service by."""
        base = f"{self.service}.{self.namespace}.svc"
        return [base, f"{base}.{self.cluster_domain}"]


def _is_unspecified(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_unspecified
    except ValueError:
        return False


class WebhookServer:
    """The HTTPS listener of the admission webhooks."""

    def __init__(
        self,
        options: WebhookOptions,
        ca: CertificateAuthority,
        state_dir: Path,
        known_hosts: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.options = options
        hosts = options.dns_names()
        if not _is_unspecified(options.address):
            hosts.append(options.address)
        self.certificate = ServingCertificate(ca, hosts)
        self.directory = state_dir / WEBHOOK_DIRECTORY
        self.injector = options.injector
        self.validator = Validator(known_hosts)
        self.port = options.port
        self._tls: ssl.SSLContext | None = None
        self._server: asyncio.Server | None = None
        self._renewal: asyncio.Task[None] | None = None

    def _load(self) -> None:
        """Write the current pair and load it into the TLS context (new handshakes use it)."""
        key, chain = self.certificate.pair
        private_directory(self.directory)
        key_file, cert_file = self.directory / "tls.key", self.directory / "tls.crt"
        write_atomically(key_file, key)
        write_atomically(cert_file, chain, PUBLIC_FILE_MODE)
        assert self._tls is not None
        self._tls.load_cert_chain(cert_file, key_file)

    async def start(self) -> None:
        """Listen (raises OSError for a port in use)."""
        self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self._tls.set_alpn_protocols(["http/1.1"])  # the API server's client offers h2 too
        self._load()
        self._server = await serve_http(
            self._handle,
            self.options.address,
            self.options.port,
            max_body=MAX_REVIEW_BYTES,
            tls=self._tls,
        )
        self.port = listening_port(self._server)
        self._renewal = asyncio.create_task(self._renew_loop())
        log.info(
            "admission webhooks on https://%s:%d (%s, %s) for %s",
            self.options.address, self.port, INJECT_PATH, VALIDATE_PATH,
            ", ".join(self.options.dns_names()),
        )  # fmt: skip

    def bundle_changed(self) -> None:
        """The trust bundle changed (a rotation step): a certificate from the new signer now."""
        if self._tls is not None and self.certificate.refresh():
            self._load()

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(RENEW_CHECK_SECONDS)
            try:
                if self.certificate.refresh():
                    self._load()
            except (OSError, ValueError) as error:  # kept serving the current one
                log.error("webhook certificate renewal failed (retrying): %s", error)

    async def _handle(self, request: Request) -> Response:
        if request.path == "/healthz":
            return text_response("ok\n")
        handlers: dict[str, Handler] = {INJECT_PATH: self.injector, VALIDATE_PATH: self.validator}
        handler = handlers.get(request.path)
        if handler is None:
            return error_response(
                404, f"no such path: {request.path} (the webhooks are {INJECT_PATH} and "
                f"{VALIDATE_PATH})",
            )  # fmt: skip
        if request.method != "POST":
            return error_response(405, f"{request.path} takes POST (an AdmissionReview)")
        loop = asyncio.get_running_loop()
        try:  # validation parses YAML and runs pydantic: off the loop that serves xDS
            review = await loop.run_in_executor(None, answer, request.body, handler)
        except ReviewError as error:
            return error_response(400, f"not an AdmissionReview v1 request: {error}")
        return json_response(review)

    async def stop(self) -> None:
        """Stop listening."""
        if self._renewal is not None:
            self._renewal.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewal
        if self._server is not None:
            self._server.close()
