"""A workload's identity from its projected service-account token (issue 18 §3, Identity).

A real ``tulle controlplane --registry kubernetes`` process checks the token a workload presents
with the TokenReview API of KMock (answered as kube-apiserver answers, tests/kube/tokenreviews.py)
and issues, through the Sign call the sidecar makes, the certificate of
``spiffe://cluster.local/ns/<ns>/sa/<sa>``; it refuses a token of another audience, one the API
server does not authenticate, and a CSR for another identity, with the reason and never the
token; one TokenReview serves a token's calls for a while. Over xDS the token's pod must be the
node's. The TokenReviewer's own rules (audiences, user names, the cache's bounds) are checked
in this process against the same KMock."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from cryptography import x509
from lightkube.models.authentication_v1 import TokenReviewStatus, UserInfo

from tests.e2e.conftest import BIN, ControlPlane, Sidecar, _stop, start_control_plane, wait_until
from tests.kube.kmock_server import KubeApi
from tests.kube.tokenreviews import TokenReviews
from tests.security.test_tokens import project
from tulle.kube.install.names import INSTANCE, LEADER_LEASE
from tulle.kube.tokenreview import TokenRefused, TokenReviewer, account_of, token_expiry
from tulle.security.renewal import CertificateKeeper
from tulle.security.spiffe import SpiffeId
from tulle.xds.client import XdsClient
from tulle.xds.grpc_stream import GrpcStreamError, ca_signer

pytestmark = pytest.mark.timeout(180)

NS = "identity"
SYSTEM = "identity-system"  # the control plane's namespace
T = TypeVar("T")


@dataclass
class Cluster:
    """KMock answering TokenReviews, a control plane reading it, and an event loop (in a thread
    of its own) for the workload's calls: connections closed on it finish closing there."""

    kube: KubeApi
    reviews: TokenReviews
    plane: ControlPlane
    loop: asyncio.AbstractEventLoop

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(work, self.loop).result(120)

    @property
    def tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.plane.state_dir / "root-cert.pem"))

    def sign(self, token: str, identity: SpiffeId | None = None) -> x509.Certificate:
        """A certificate from the control plane's CA for ``token``, as the sidecar gets it."""
        signer = ca_signer(f"127.0.0.1:{self.plane.secure_xds_port}", self.tls, lambda: token)
        keeper = CertificateKeeper(signer, identity)
        credentials = self.run(keeper.renew_once())
        return x509.load_pem_x509_certificates(credentials.chain_pem)[0]

    def refusal(self, token: str, identity: SpiffeId | None = None) -> str:
        with pytest.raises(GrpcStreamError) as refused:
            self.sign(token, identity)
        reason = str(refused.value)
        assert token not in reason
        assert token.rsplit(".", maxsplit=1)[-1] not in reason
        return reason


@pytest.fixture(scope="module")
def reviews(token_reviews: TokenReviews) -> TokenReviews:
    return token_reviews


@pytest.fixture(scope="module")
def cluster(
    kube_api: KubeApi, reviews: TokenReviews, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("identity")
    config = root / "config"
    config.mkdir()
    plane = start_control_plane(
        root / "state", config, insecure_xds=False,
        extra=("--registry", "kubernetes", "--kubeconfig", str(kube_api.kubeconfig),
               "--namespace", SYSTEM),
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="workloads", daemon=True)
    thread.start()
    try:
        yield Cluster(kube_api, reviews, plane, loop)
    finally:
        _stop(plane.proc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(30)
        loop.close()
        # What the control plane wrote besides (its CA's Secret, Lease, root-cert ConfigMaps).
        kube = {**os.environ, "KUBECONFIG": str(kube_api.kubeconfig)}
        for args in (
            ("configmaps", "-A", "-l", f"{INSTANCE}={SYSTEM}"),
            ("--ignore-not-found", "secret", "tulle-ca-secret", "-n", SYSTEM),
            ("--ignore-not-found", "lease", LEADER_LEASE, "-n", SYSTEM),
        ):
            subprocess.run(["kubectl", "delete", *args], env=kube, check=True, timeout=60,
                           capture_output=True)  # fmt: skip


def uri(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


def test_a_service_account_token_gets_its_certificate(cluster: Cluster) -> None:
    token = cluster.reviews.token(NS, "web", pod="web-0")
    certificate = cluster.sign(token)
    assert uri(certificate) == [f"spiffe://cluster.local/ns/{NS}/sa/web"]
    # The review asked for the mesh CA's audience, and its answer serves the next calls.
    assert cluster.reviews.asked[-1]["audiences"] == ["tulle-ca"]
    again = cluster.sign(token)
    assert uri(again) == uri(certificate)
    assert again.serial_number != certificate.serial_number
    assert cluster.reviews.count(token) == 1


def test_tokens_that_prove_nothing_are_refused(cluster: Cluster) -> None:
    other_audience = cluster.reviews.token(NS, "web", pod="web-0", audiences=("vault",))
    assert cluster.refusal(other_audience) == (
        "UNAUTHENTICATED: credential refused: service-account token refused: the API server did "
        'not authenticate the token: [invalid bearer token, token audiences ["vault"] is invalid '
        'for the target audiences ["tulle-ca"]]'
    )
    unknown = TokenReviews().token(NS, "web", pod="web-0")  # never issued by this API server
    assert cluster.refusal(unknown) == (
        "UNAUTHENTICATED: credential refused: service-account token refused: the API server did "
        "not authenticate the token: [invalid bearer token, service account token is not valid]"
    )
    assert cluster.reviews.count(unknown) == 1
    # A refusal is not kept: the API server is asked again.
    cluster.refusal(unknown)
    assert cluster.reviews.count(unknown) == 2
    expired = cluster.reviews.token(NS, "web", pod="web-0", seconds=-10)
    assert cluster.refusal(expired) == (
        "UNAUTHENTICATED: credential refused: service-account token refused: the token has expired"
    )
    assert cluster.reviews.count(expired) == 0  # refused before asking


def test_a_csr_for_another_identity_is_refused(cluster: Cluster) -> None:
    token = cluster.reviews.token(NS, "web", pod="web-1")
    reason = cluster.refusal(token, SpiffeId("cluster.local", NS, "payment"))
    assert reason.startswith("PERMISSION_DENIED: CSR refused: "), reason
    assert f"spiffe://cluster.local/ns/{NS}/sa/payment" in reason
    assert f"spiffe://cluster.local/ns/{NS}/sa/web" in reason


def test_a_bootstrap_token_still_works_beside_the_cluster(cluster: Cluster) -> None:
    path = cluster.plane.workload_token("vm-app", "vm-app-0")
    before = len(cluster.reviews.asked)
    certificate = cluster.sign(path.read_text().strip())
    assert uri(certificate) == ["spiffe://cluster.local/ns/default/sa/vm-app"]
    assert len(cluster.reviews.asked) == before  # no TokenReview for a bootstrap token


def _accept(resources: Any, version: str) -> None:
    """Any config is fine: what is tested is who gets one."""


def test_xds_needs_the_token_of_the_nodes_pod(cluster: Cluster) -> None:
    def node(pod: str) -> str:
        return f"sidecar~10.0.0.7~{pod}.{NS}~{NS}.svc.cluster.local"

    def client(pod: str, token: str) -> XdsClient:
        xds = XdsClient(f"127.0.0.1:{cluster.plane.secure_xds_port}", node(pod), _accept)
        xds.tls = cluster.tls
        xds.credential = lambda: token
        return xds

    async def refusal(xds: XdsClient) -> str:
        with pytest.raises(GrpcStreamError) as ended:
            await asyncio.wait_for(xds._stream(), 30)
        assert not xds.connected
        return str(ended.value)

    own = cluster.reviews.token(NS, "web", pod="web-2")
    unbound = cluster.reviews.token(NS, "web")

    async def main() -> None:
        xds = client("web-2", own)
        task = asyncio.create_task(xds.run())
        await asyncio.wait_for(xds.ready.wait(), 60)
        task.cancel()
        assert await refusal(client("web-3", own)) == (
            f"PERMISSION_DENIED: the token of replica web-2.{NS} (ns/{NS}/sa/web) may not "
            f"subscribe as node {node('web-3')}"
        )
        assert await refusal(client("web-2", unbound)) == (
            f"PERMISSION_DENIED: the token of ns/{NS}/sa/web is bound to no pod: it may not "
            f"subscribe as node {node('web-2')}"
        )

    cluster.run(main())


def test_an_injected_sidecar_uses_the_token_the_kubelet_projects(
    cluster: Cluster, tmp_path: Path
) -> None:
    """A real ``tulle proxy`` with the arguments the injector gives it: its token file is the
    kubelet's projected token (0644, in the kubelet's layout), which it accepts; it gets its
    certificate and config from the control plane with it."""
    token = cluster.reviews.token(NS, "web", pod="web-6")
    path = project(tmp_path / "tokens", "tulle-token", token + "\n", 0o644)
    node = f"sidecar~127.0.0.1~web-6.{NS}~{NS}.svc.cluster.local"
    root = cluster.plane.state_dir / "root-cert.pem"
    proc = subprocess.Popen(
        [str(BIN / "tulle"), "proxy", "--xds", f"127.0.0.1:{cluster.plane.secure_xds_port}",
         "--xds-root-cert", str(root), "--token-file", str(path), "--node-id", node,
         "--admin-port", "0", "--admin-token-file", str(tmp_path / "admin-token"),
         "--http-proxy-port", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("tulle proxy: admin"), line + proc.stderr.read()
        admin = int(line.split("admin 127.0.0.1:")[1].split(",")[0])
        sidecar = Sidecar(proc, admin, int(line.rsplit(":", 1)[1]), node)
        wait_until(sidecar.ready, timeout=60)

        def issued() -> dict[str, Any]:
            status = httpx.get(
                f"{cluster.plane.api}/api/v1/proxy-status", headers=cluster.plane.auth, timeout=10
            ).json()
            found = [n.get("certificate", {}) for n in status["nodes"] if n["node"] == node]
            return found[0] if found else {}

        wait_until(lambda: bool(issued()), timeout=30)
        assert issued()["identity"] == f"spiffe://cluster.local/ns/{NS}/sa/web"
    finally:
        _stop(proc)


# --- the reviewer's own rules ------------------------------------------------------------------


def status(**fields: Any) -> TokenReviewStatus:
    user = UserInfo(username=fields.pop("username", f"system:serviceaccount:{NS}:web"))
    return TokenReviewStatus(**{"authenticated": True, "user": user, **fields})


def test_what_a_review_must_say() -> None:
    assert account_of(status(audiences=["tulle-ca"]), "tulle-ca").service_account == "web"
    # An API server that ignored spec.audiences names none: not proof of the audience.
    with pytest.raises(TokenRefused, match=r"not for audience 'tulle-ca'.*no audience"):
        account_of(status(), "tulle-ca")
    with pytest.raises(TokenRefused, match="user 'alice', not a service account"):
        account_of(status(audiences=["tulle-ca"], username="alice"), "tulle-ca")
    with pytest.raises(TokenRefused, match="is not system:serviceaccount:<namespace>:<name>"):
        account_of(status(audiences=["tulle-ca"], username="system:serviceaccount:ns"), "tulle-ca")
    with pytest.raises(TokenRefused, match="did not authenticate the token: boom"):
        account_of(TokenReviewStatus(authenticated=False, error="boom"), "tulle-ca")
    assert token_expiry("a.b") is None
    assert token_expiry("a.!!.c") is None


def test_answers_are_kept_no_longer_than_a_minute_or_the_token(
    kube_api: KubeApi, reviews: TokenReviews
) -> None:
    now = [0.0]
    reviewer = TokenReviewer.connect(kube_api.kubeconfig, None)
    reviewer.clock = lambda: now[0]
    try:
        long_lived = reviews.token(NS, "web", pod="web-4", seconds=3600)
        short_lived = reviews.token(NS, "web", pod="web-5", seconds=30)
        expiry = token_expiry(short_lived)
        assert expiry is not None
        start = expiry - 30
        for token in (long_lived, short_lived):
            now[0] = start
            assert reviewer.review(token).pod in ("web-4", "web-5")
            now[0] = start + 29
            reviewer.review(token)
        assert (reviews.count(long_lived), reviews.count(short_lived)) == (1, 1)
        now[0] = start + 31  # past the short-lived token's exp: refused without asking
        with pytest.raises(TokenRefused, match="expired"):
            reviewer.review(short_lived)
        reviewer.review(long_lived)
        assert reviews.count(long_lived) == 1
        now[0] = start + 61  # past the cache's minute: asked again
        reviewer.review(long_lived)
        assert reviews.count(long_lived) == 2
        reviewer.max_cached = 1
        reviewer.review(reviews.token(NS, "api", pod="api-0"))
        reviewer.review(long_lived)  # pushed out by the newer one
        assert reviews.count(long_lived) == 3
    finally:
        reviewer.close()


def test_refusal_when_the_api_server_cannot_be_reached(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'http://127.0.0.1:9'}}]\n"
        "users: [{name: c, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: c}}]\n"
    )
    reviewer = TokenReviewer.connect(kubeconfig, None)
    try:
        with pytest.raises(TokenRefused, match="cannot be reached for a TokenReview") as refused:
            reviewer.review(TokenReviews().token(NS, "web"))
        assert "Bearer" not in str(refused.value)
    finally:
        reviewer.close()
