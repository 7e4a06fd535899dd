"""AuthorizationPolicy on an opaque TCP port, end to end in process on real loopback sockets and
real mTLS: the control plane's translation of the policies (network RBAC) is installed in a real
sidecar (``Proxy.accept``, as an xDS push would), whose inbound listener takes mutual TLS as the
port's STRICT PeerAuthentication says, judges each connection once on the identity the caller's
certificate proves, and pipes an admitted one to the app. A refused connection is closed before
the app sees a byte (the app is not even connected to), counted and logged with the peer, and
has an access-log entry naming the policy; the connections piped to the app are in the TCP
metrics with the caller's principal and ``connection_security_policy``."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import ssl
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from tests.aio import until
from tests.proxy.test_tcp import mesh_tls
from tests.tls_material import NO_CERT, Credential, Material, make_material
from tulle.api import validate_text
from tulle.control.snapshot import build_snapshot
from tulle.control.translate import translate
from tulle.control.translate.context import NodeView
from tulle.obs.access_log import AccessLog
from tulle.proxy.app import Proxy

NODE = "sidecar~127.0.0.1~db-0.default~default.svc.cluster.local"
VIEW = NodeView("sidecar", "default", (), "db")
FRONTEND = "cluster.local/ns/default/sa/frontend"
BACKEND = "cluster.local/ns/default/sa/backend"
WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: db}
spec:
  command: [db]
  ports: [{name: db, port: 5432, protocol: TCP}]
---
"""


def mtls_mode(mode: str) -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: db}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  mtls: {{mode: {mode}}}
---
"""


STRICT = mtls_mode("STRICT")


def authorization(name: str, action: str, rules: str) -> str:
    return f"""\
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: db}}}}
  action: {action}
  rules:
{rules}---
"""


ONLY_FRONTEND = authorization(
    "only-frontend", "ALLOW", f"    - from: [{{source: {{principals: [{FRONTEND}]}}}}]\n"
)
DENY_BACKEND = authorization(
    "no-backend", "DENY", f"    - from: [{{source: {{principals: [{BACKEND}]}}}}]\n"
)
ONLY_PATHS = authorization("paths-only", "ALLOW", "    - to: [{operation: {paths: [/]}}]\n")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    return make_material(tmp_path_factory.mktemp("tcp-authz"))


class App(asyncio.Protocol):
    """The app behind the sidecar: records each connection and what it read; answers each read
    with ``got:<bytes>``."""

    def __init__(self, seen: list[bytearray]) -> None:
        self.seen = seen
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.seen.append(bytearray())

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.seen[-1] += data
        self.transport.write(b"got:" + data)


class Mesh:
    """A sidecar for the ``db`` workload (identity: backend's certificate, as the callee needs
    one) with its inbound listener on a loopback port, and the app behind it."""

    def __init__(self, material: Material) -> None:
        self.material = material
        self.app_seen: list[bytearray] = []
        self.proxy: Proxy | None = None
        self.port = 0

    async def start(self, policies: str) -> None:
        loop = asyncio.get_running_loop()
        app = await loop.create_server(lambda: App(self.app_seen), "127.0.0.1", 0)
        app_port = int(app.sockets[0].getsockname()[1])
        proxy = Proxy("127.0.0.1:1", NODE, app_port=app_port, access_log=AccessLog(io.StringIO()))
        proxy.mtls = mesh_tls(self.material, self.material.backend)
        proxy.metrics.use_certificate(proxy.mtls.certificate)
        self.proxy = proxy
        self.configure(policies)
        inbound = await loop.create_server(proxy._inbound_connection, "127.0.0.1", 0)
        self.port = int(inbound.sockets[0].getsockname()[1])
        self.servers = [app, inbound]

    def configure(self, policies: str) -> None:
        """The policies as the control plane translates them, pushed to the sidecar."""
        if "PeerAuthentication" not in policies:
            policies = STRICT + policies
        result = validate_text(WORKLOAD + policies)
        assert result.model is not None, [f.format() for f in result.findings]
        resources = translate(build_snapshot(1, result.model, ()), VIEW)
        assert self.proxy is not None
        nack = self.proxy.accept(resources, "1")
        assert nack is None, nack

    async def call(self, credential: Credential, data: bytes = b"SELECT 1") -> bytes:
        """A mesh caller with ``credential``: mTLS, send, read the app's answer (what came
        before the end: b"" when the sidecar closed the connection without one)."""
        context = self.material.client_context(credential)
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, ssl=context, server_hostname="db"
        )
        try:
            writer.write(data)
            await writer.drain()
            return await reader.readexactly(len(b"got:" + data))
        except asyncio.IncompleteReadError as end:
            return end.partial
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            return b""
        finally:
            writer.close()

    async def call_plain(self, data: bytes) -> bytes:
        """A caller outside the mesh: plain text (PERMISSIVE ports take it)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        try:
            writer.write(data)
            await writer.drain()
            return await reader.readexactly(len(b"got:" + data))
        except asyncio.IncompleteReadError as end:
            return end.partial
        except ConnectionResetError:
            return b""
        finally:
            writer.close()

    def denied(self, policy: str) -> float:
        assert self.proxy is not None
        value = self.proxy.metrics.registry.get_sample_value(
            "tulle_inbound_tcp_denied_total",
            {"destination_service": "db.default.svc.cluster.local", "policy": policy},
        )
        return value or 0.0

    def entries(self) -> list[dict[str, Any]]:
        """The sidecar's access-log entries so far."""
        assert self.proxy is not None
        self.proxy.log.flush()
        stream = self.proxy.log.stream
        assert isinstance(stream, io.StringIO)
        return [json.loads(line) for line in stream.getvalue().splitlines()]

    def piped(self) -> dict[tuple[str, str, str, str], float]:
        """Connections piped to the app and closed, by (source workload, source principal,
        destination principal, connection security policy)."""
        assert self.proxy is not None
        return {
            (sample.labels["source_workload"], sample.labels["source_principal"],
             sample.labels["destination_principal"],
             sample.labels["connection_security_policy"]): sample.value
            for family in self.proxy.metrics.registry.collect()
            for sample in family.samples
            if sample.name == "tulle_tcp_connections_closed_total"
        }  # fmt: skip

    def close(self) -> None:
        for server in self.servers:
            server.close()


@pytest.fixture
def runner() -> Iterator[asyncio.Runner]:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        yield runner


def scenario(runner: asyncio.Runner, material: Material, policies: str, body: Any) -> None:
    async def run() -> None:
        mesh = Mesh(material)
        await mesh.start(policies)
        try:
            await asyncio.wait_for(body(mesh), 30)
        finally:
            mesh.close()

    runner.run(run())


def test_allow_principals_admits_frontend_and_closes_another_identity_unread(
    runner: asyncio.Runner, material: Material, caplog: pytest.LogCaptureFixture
) -> None:
    async def body(mesh: Mesh) -> None:
        assert await mesh.call(material.frontend, b"hello") == b"got:hello"
        assert mesh.app_seen == [bytearray(b"hello")]
        with caplog.at_level(logging.WARNING, logger="tulle.proxy.inbound_tls"):
            assert await mesh.call(material.backend, b"DROP TABLE") == b""
        # The app was never connected to: not a byte of the refused caller reached it.
        assert mesh.app_seen == [bytearray(b"hello")]
        assert mesh.denied("none") == 1
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1, refused
        assert "from 127.0.0.1:" in refused[0]
        assert f"spiffe://{BACKEND}" in refused[0]
        assert "no ALLOW policy matches (default/only-frontend)" in refused[0]
        # Still open to the allowed caller.
        assert await mesh.call(material.frontend, b"again") == b"got:again"
        # The refusal's access-log entry names the caller and the policy.
        (denied,) = [e for e in mesh.entries() if e["flags"] == "RBAC"]
        assert denied["reason"] == "denied: no ALLOW policy matches (default/only-frontend)"
        assert (denied["peer_principal"], denied["listener"], denied["bytes_received"]) == (
            f"spiffe://{BACKEND}", "inbound", 0
        )  # fmt: skip
        assert (denied["service"], denied["source"]) == ("db.default.svc.cluster.local",
                                                         "127.0.0.1")  # fmt: skip

    scenario(runner, material, ONLY_FRONTEND, body)


def test_deny_principals_closes_that_identity_only(
    runner: asyncio.Runner, material: Material
) -> None:
    async def body(mesh: Mesh) -> None:
        assert await mesh.call(material.backend, b"x") == b""
        assert mesh.app_seen == []
        assert mesh.denied("default/no-backend") == 1
        assert await mesh.call(material.frontend, b"y") == b"got:y"
        assert mesh.app_seen == [bytearray(b"y")]

    scenario(runner, material, DENY_BACKEND, body)


def test_an_allow_rule_with_only_paths_never_admits_a_tcp_connection(
    runner: asyncio.Runner, material: Material
) -> None:
    async def body(mesh: Mesh) -> None:
        for credential in (material.frontend, material.backend):
            assert await mesh.call(credential, b"z") == b""
        assert mesh.app_seen == []
        assert mesh.denied("none") == 2

    scenario(runner, material, ONLY_PATHS, body)


def test_a_new_policy_applies_to_the_next_connection(
    runner: asyncio.Runner, material: Material
) -> None:
    async def body(mesh: Mesh) -> None:
        assert await mesh.call(material.backend, b"a") == b"got:a"  # no policy: admitted
        mesh.configure(DENY_BACKEND)
        assert await mesh.call(material.backend, b"b") == b""
        mesh.configure("")
        assert await mesh.call(material.backend, b"c") == b"got:c"
        assert mesh.app_seen == [bytearray(b"a"), bytearray(b"c")]

    scenario(runner, material, "", body)


def test_a_plain_text_caller_of_a_permissive_port_has_no_principal_to_admit(
    runner: asyncio.Runner, material: Material
) -> None:
    async def body(mesh: Mesh) -> None:
        assert await mesh.call_plain(b"plain") == b""
        assert mesh.app_seen == []
        assert await mesh.call(material.frontend, b"tls") == b"got:tls"
        mesh.configure(mtls_mode("PERMISSIVE"))  # no policy: plain text goes through
        assert await mesh.call_plain(b"plain") == b"got:plain"
        assert mesh.app_seen == [bytearray(b"tls"), bytearray(b"plain")]
        # Each piped connection is labelled by how it came: the caller's certificate over
        # mTLS, unknown and ``none`` in plain text (a TCP caller has no header to claim).
        db = f"spiffe://{BACKEND}"
        wanted = {("frontend", f"spiffe://{FRONTEND}", db, "mutual_tls"): 1.0,
                  ("unknown", "unknown", "unknown", "none"): 1.0}  # fmt: skip
        await until(lambda: mesh.piped() == wanted)
        plain = [e for e in mesh.entries() if e["flags"] == "-"]
        assert sorted((e["peer_principal"] or "", e["bytes_received"]) for e in plain) == [
            ("", 5), (f"spiffe://{FRONTEND}", 3)
        ]  # fmt: skip

    scenario(runner, material, mtls_mode("PERMISSIVE") + ONLY_FRONTEND, body)


def test_connections_the_mtls_gate_refuses_have_access_log_entries(
    runner: asyncio.Runner, material: Material
) -> None:
    async def body(mesh: Mesh) -> None:
        assert await mesh.call_plain(b"plain") == b""
        await until(lambda: [e for e in mesh.entries() if e["flags"] == "NR"] != [])
        (refused,) = mesh.entries()
        assert (refused["reason"], refused["listener"], refused["protocol"]) == (
            "plain text refused: STRICT mTLS", "inbound", "tcp"
        )  # fmt: skip
        assert (refused["peer_principal"], refused["source"]) == (None, "127.0.0.1")
        # A TLS caller without a client certificate: its handshake fails (DPE, the reason).
        assert await mesh.call(NO_CERT, b"no certificate") == b""
        await until(lambda: [e for e in mesh.entries() if e["flags"] == "DPE"] != [])
        (failed,) = [e for e in mesh.entries() if e["flags"] == "DPE"]
        assert "certificate" in failed["reason"].lower(), failed
        assert (failed["peer_principal"], failed["listener"]) == (None, "inbound")
        assert mesh.app_seen == []
        assert mesh.piped() == {}

    scenario(runner, material, "", body)
