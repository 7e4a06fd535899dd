"""The mesh CA's signing service, served beside ADS on the control plane's gRPC (xDS) port.

A workload (sidecar, library, ``tulle agent`` for proxyless gRPC) makes its own key, which never
leaves its process, and calls ``/tulle.security.v1.CertificateService/Sign`` with a CSR and its
credential (``authorization: Bearer <bootstrap token>`` in the call's metadata). The identity the
certificate names comes from the credential, never from the CSR: a CSR that asks for another
identity is refused. Messages are JSON (the method takes and gives bytes; see docs/security.md):

    request:  {"csr": "<PEM>", "replica": "<pod>.<namespace>" (optional: refused unless it is
               the replica the credential was issued to; ``tulle agent`` sends it)}
    response: {"certChain": "<PEM: leaf, then intermediates>", "trustBundle": "<PEM roots>",
               "identity": "spiffe://...", "serial": "<hex>", "notBefore": ..., "notAfter": ...}

Every refusal is a gRPC status with the reason (UNAUTHENTICATED: no or a wrong credential;
INVALID_ARGUMENT: a bad CSR or request; PERMISSION_DENIED: a CSR for another identity), logged
with the peer and counted by result (``tulle_ca_csr_total``)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography import x509
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tulle.control.issued import IssuedRecords
from tulle.security.ca import CaError, CertificateAuthority, IssuedCertificate
from tulle.security.certificates import issued_by, load_certificates
from tulle.security.keys import CsrRefused
from tulle.security.rootstore import root_name
from tulle.security.tokens import Unauthenticated, WorkloadIdentity, bearer_token
from tulle.xds.grpc_stream import CA_SIGN_PATH

log = logging.getLogger(__name__)

SERVICE = "tulle.security.v1.CertificateService"
METHOD = "Sign"
PATH = CA_SIGN_PATH  # f"/{SERVICE}/{METHOD}", as workloads call it
MAX_REQUEST_BYTES = 64 * 1024


class ReplicaAuthenticator(Protocol):
    """Checks a workload credential: the replica it was issued to and the identity it proves
    (``BootstrapTokens``; Kubernetes' TokenReview later)."""

    def authenticate_replica(self, credential: str) -> tuple[str, WorkloadIdentity]: ...


class SignRefusedError(Exception):
    """A signing request refused: ``code`` is the gRPC status, ``result`` the metric label."""

    def __init__(self, code: grpc.StatusCode, result: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.result = result


class _RootExpiry(Collector):
    """``tulle_ca_root_expiration_timestamp_seconds``: each root of the trust bundle's
    not-after, read at scrape time (a rotation changes the bundle), for ``tulle check`` and
    alerts."""

    def __init__(self, ca: CertificateAuthority) -> None:
        self.ca = ca

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "tulle_ca_root_expiration_timestamp_seconds",
            "When each root of the mesh's trust bundle expires (POSIX seconds).",
            labels=("serial", "subject"),
        )
        for root in self.ca.roots:
            labels = (f"{root.serial_number:x}", root.subject.rfc4514_string())
            gauge.add_metric(labels, root.not_valid_after_utc.timestamp())
        yield gauge


class CertificateService:
    """Signs workload CSRs for callers that prove their identity."""

    def __init__(
        self,
        ca: CertificateAuthority,
        authenticator: ReplicaAuthenticator,
        lifetime: Callable[[], float],
        registry: CollectorRegistry,
        records: Path | None = None,
    ) -> None:
        self.ca = ca
        self.authenticator = authenticator
        self.lifetime = lifetime  # seconds, read at each signing (the Mesh resource may change)
        # The last certificate of each replica, with the root it chains to ("root") and the
        # roots of the bundle sent with it ("trusts"): what root rotation waits on; kept in
        # ``records`` (when given) across restarts.
        self.issued = IssuedRecords(records)
        self.csrs = Counter(
            "tulle_ca_csr", "CSRs the mesh CA answered, by result", ["result"], registry=registry
        )
        registry.register(_RootExpiry(ca))

    def handler(self) -> grpc.GenericRpcHandler:
        """The service for ``server.add_generic_rpc_handlers`` (bytes in, bytes out)."""
        method = grpc.unary_unary_rpc_method_handler(self._serve)
        return grpc.method_handlers_generic_handler(SERVICE, {METHOD: method})

    async def _serve(self, request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        metadata = dict(context.invocation_metadata() or ())
        credential = str(metadata.get("authorization", ""))
        security = context.auth_context().get("transport_security_type", [b""])
        try:
            if security != [b"ssl"]:
                # A credential sent in plain text may have been read on the way: refused, and
                # the caller is told where to go instead.
                raise SignRefusedError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "plain_text",
                    "certificates are signed only over TLS: call the secure xDS port",
                )
            # Signing is CPU work (an ECDSA signature, a CSR check): off the loop serving xDS.
            answer = await asyncio.to_thread(self.sign, credential, request)
        except SignRefusedError as refusal:
            self.csrs.labels(refusal.result).inc()
            log.warning("CSR from %s refused: %s", context.peer(), refusal)
            await context.abort(refusal.code, str(refusal))
            raise AssertionError("abort returns only by raising") from None
        self.csrs.labels("issued").inc()
        return answer

    def sign(self, authorization: str, request: bytes) -> bytes:
        """The JSON answer to one request; :class:`SignRefusedError` says why not."""
        credential = bearer_token(authorization)
        if credential is None:
            raise SignRefusedError(
                grpc.StatusCode.UNAUTHENTICATED,
                "unauthenticated",
                "no credential: send 'authorization: Bearer <bootstrap token>' with the CSR",
            )
        try:
            replica, proven = self.authenticator.authenticate_replica(credential)
        except Unauthenticated as error:
            raise SignRefusedError(
                grpc.StatusCode.UNAUTHENTICATED, "unauthenticated", f"credential refused: {error}"
            ) from None
        csr, asked = _request_of(request)
        if asked is not None and asked != replica:
            raise SignRefusedError(
                grpc.StatusCode.PERMISSION_DENIED,
                "wrong_replica",
                f"the token of replica {replica} may not get a certificate for replica {asked}",
            )
        identity = proven.spiffe_id(self.ca.trust_domain)
        lifetime = timedelta(seconds=self.lifetime())
        # The bundle is read before signing: a rotation step between the two leaves a bundle
        # that still trusts the signer (a staged root is trusted before it signs; a retired one
        # stops signing before it leaves the bundle), and the record says what was sent.
        bundle = self.ca.trust_bundle_pem()
        try:
            issued = self.ca.issue(csr, identity, lifetime)
        except CsrRefused as error:
            code = grpc.StatusCode.INVALID_ARGUMENT
            result = "bad_csr"
            if error.wrong_identity:
                code, result = grpc.StatusCode.PERMISSION_DENIED, "wrong_identity"
            raise SignRefusedError(code, result, f"CSR refused: {error}") from None
        except CaError as error:
            raise SignRefusedError(
                grpc.StatusCode.FAILED_PRECONDITION, "ca_error", f"the CA cannot sign: {error}"
            ) from None
        log.info("issued %s serial %x until %s", identity, issued.serial, issued.not_after)
        record = {
            "identity": identity.uri,
            "serial": f"{issued.serial:x}",
            "notBefore": issued.not_before.isoformat(),
            "notAfter": issued.not_after.isoformat(),
        }
        roots = load_certificates(bundle, "trust bundle")
        self.issued.put(
            replica,
            {
                **record,
                "root": signing_root_name(issued, roots),
                "trusts": [root_name(root) for root in roots],
                "issuedAt": datetime.now(UTC).isoformat(),
            },
        )
        answer: dict[str, Any] = {
            "certChain": issued.chain_pem.decode(),
            "trustBundle": bundle.decode(),
            **record,
        }
        return json.dumps(answer).encode()

    def trust_bundle(self) -> list[dict[str, str]]:
        """The roots every workload trusts, as ``tulle proxy-config --type secrets`` shows them."""
        return [
            {
                "subject": root.subject.rfc4514_string(),
                "serial": f"{root.serial_number:x}",
                "notBefore": root.not_valid_before_utc.isoformat(),
                "notAfter": root.not_valid_after_utc.isoformat(),
            }
            for root in self.ca.roots
        ]


def signing_root_name(issued: IssuedCertificate, roots: list[x509.Certificate]) -> str:
    """The name of the root in ``roots`` that ``issued`` chains to ("unknown" if none does)."""
    top = load_certificates(issued.chain_pem, "certificate chain")[-1]
    for root in roots:
        if issued_by(top, root):
            return root_name(root)
    return "unknown"


def _request_of(request: bytes) -> tuple[bytes, str | None]:
    """The CSR PEM of a request and the replica it asks for, if it names one;
    :class:`SignRefusedError` names what is wrong."""
    if len(request) > MAX_REQUEST_BYTES:
        raise SignRefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad_request",
            f"request of {len(request)} bytes; at most {MAX_REQUEST_BYTES}",
        )
    try:
        data = json.loads(request)
    except (ValueError, UnicodeDecodeError):
        data = None
    csr = data.get("csr") if isinstance(data, dict) else None
    if not isinstance(csr, str) or not csr.strip():
        raise SignRefusedError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "bad_request",
            'the request must be JSON {"csr": "<PEM certificate signing request>"}',
        )
    replica = data.get("replica")
    if replica is not None and not isinstance(replica, str):
        raise SignRefusedError(
            grpc.StatusCode.INVALID_ARGUMENT, "bad_request", '"replica" must be a string'
        )
    return csr.encode(), replica
