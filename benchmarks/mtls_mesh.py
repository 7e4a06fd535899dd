"""The processes of ``benchmarks.proxy_mtls``: a control plane with the mesh CA and its secure xDS
port, pairs of sidecars (client side A with its HTTP proxy listener, server side B with its
inbound listener in front of nginx) that prove who they are with bootstrap tokens and get their
certificates from the CA (the real Sign call), and pairs of HAProxy doing the same two hops,
plain or with mutual TLS, with certificates the same CA issued through the same call."""

from __future__ import annotations

import asyncio
import os
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from benchmarks.proxy_http import PROJECT, SERVER_CPU, TULLE, free_port, pinned, wait_port
from tulle.security.renewal import CertificateKeeper
from tulle.security.tokens import BootstrapTokens, admin_token, read_token_file
from tulle.xds.grpc_stream import ca_signer

NAMESPACE = "default"
SERVICE_PORT = 8080
# What A and B negotiate (OpenSSL's default order, which Python keeps): HAProxy is told the same.
CIPHERSUITE = "TLS_AES_256_GCM_SHA384"

WORKLOAD = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {{name: {name}}}
spec:
  command: [nginx]
  ports: {ports}
---
"""
PEER_AUTHENTICATION = """\
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {name}}}}}
  mtls: {{mode: {mode}}}
---
"""


@dataclass(frozen=True)
class PairSpec:
    """One sidecar pair: ``a-<name>`` calls service ``b-<name>``, over mTLS or plain text, run
    from ``path`` (the sources or a compiled build)."""

    name: str
    mtls: bool
    path: Path

    @property
    def client(self) -> str:
        return f"a-{self.name}"

    @property
    def server(self) -> str:
        return f"b-{self.name}"

    @property
    def host(self) -> str:
        """The Host header A routes by."""
        return f"{self.server}:{SERVICE_PORT}"


NO_ACCESS_LOG = """\
apiVersion: tulle.dev/v1alpha1
kind: Mesh
metadata: {name: mesh, namespace: tulle-system}
spec: {accessLog: {enabled: false}}
---
"""


def mesh_config(pairs: list[PairSpec], access_log: bool = True) -> str:
    """Workloads for every pair (B serves port 8080; A serves nothing), and B's mode: STRICT
    for an mTLS pair, DISABLE for a plain one; without ``access_log``, a Mesh that turns the
    sidecars' access log off (Istio's default; on is Tulle's)."""
    text = "" if access_log else NO_ACCESS_LOG
    for pair in pairs:
        text += WORKLOAD.format(name=pair.client, ports="[]")
        text += WORKLOAD.format(name=pair.server, ports=f"[{{name: http, port: {SERVICE_PORT}}}]")
        mode = "STRICT" if pair.mtls else "DISABLE"
        text += PEER_AUTHENTICATION.format(name=pair.server, mode=mode)
    return text


@dataclass
class ControlPlane:
    """A running ``tulle controlplane``: with the mesh CA, nodes on its secure xDS port only
    (every node proves who it is); or one of the code before issue 17 (``secure_xds`` empty)."""

    proc: subprocess.Popen[bytes]
    state: Path
    secure_xds: str
    api: str
    xds: str = ""

    @property
    def root_cert(self) -> Path:
        return self.state / "root-cert.pem"

    def token(self, service_account: str, pod: str) -> Path:
        """A bootstrap token for replica ``pod`` proving ``service_account``, as ``tulle up``
        gives one."""
        return BootstrapTokens(self.state).issue(NAMESPACE, service_account, f"{pod}.{NAMESPACE}")

    def register(self, service: str, port: int, mtls: bool) -> None:
        """``service``'s endpoint: B's inbound listener, in the mesh (tlsMode) when ``mtls``."""
        labels = {"app": service, **({"security.istio.io/tlsMode": "istio"} if mtls else {})}
        httpx.post(
            f"{self.api}/api/v1/endpoints",
            json={"service": service, "namespace": NAMESPACE, "address": "127.0.0.1",
                  "port": port, "servicePort": SERVICE_PORT, "labels": labels,
                  "serviceAccount": service, "workload": service},
            headers={"authorization": f"Bearer {admin_token(self.state)}"},
        ).raise_for_status()  # fmt: skip


def start_control_plane(work: Path, pairs: list[PairSpec], access_log: bool = True) -> ControlPlane:
    config = work / "mesh"
    config.mkdir()
    (config / "mesh.yaml").write_text(mesh_config(pairs, access_log))
    state = work / "state"
    proc = pinned(
        SERVER_CPU,
        [TULLE, "controlplane", "-f", str(config), "--state-dir", str(state), "--xds-port", "0",
         "--secure-xds-port", "0", "--http-port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    return _started(proc, state)


def _started(proc: subprocess.Popen[bytes], state: Path) -> ControlPlane:
    """The control plane once it printed where it listens."""
    assert proc.stdout is not None
    # "tulle controlplane: xDS on H:PORT, secure xDS on H:PORT, API on http://H:PORT" (before
    # issue 17 without the secure port)
    line = proc.stdout.readline().decode()
    if not line.startswith("tulle controlplane: xDS on "):
        proc.kill()
        raise RuntimeError(f"control plane did not start: {line!r}")
    xds = line.split("xDS on ")[1].split(",")[0]
    secure = line.split("secure xDS on ")[1].split(",")[0] if "secure xDS" in line else ""
    api = line.rsplit(" ", 1)[1].strip()
    return ControlPlane(proc, state, secure, api, xds)


def before_issue(ref: str, work: Path) -> Path:
    """The sources of ``tulle`` at git ``ref`` (the code before issue 17), extracted under
    ``work``."""
    tree = work / "before"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(PROJECT), "archive", ref, "tulle"], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def start_before_pairs(
    work: Path, python: str, specs: list[PairSpec], backend: int
) -> tuple[ControlPlane, list[Pair]]:
    """Plain pairs run by the code before issue 17 (``spec.path``: its sources or its compiled
    build), with a control plane of that code (the first spec's): no CA, plain-text xDS."""
    config = work / "before-mesh"
    config.mkdir()
    port = f"[{{name: http, port: {SERVICE_PORT}}}]"
    (config / "mesh.yaml").write_text(
        "".join(WORKLOAD.format(name=spec.client, ports="[]")
                + WORKLOAD.format(name=spec.server, ports=port) for spec in specs)
    )  # fmt: skip
    state = work / "before-state"
    proc = run_tulle(
        python, specs[0].path,
        ["controlplane", "-f", str(config), "--state-dir", str(state), "--xds-port", "0",
         "--http-port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    plane = _started(proc, state)
    return plane, [start_sidecar_pair(plane, python, spec, backend) for spec in specs]


@dataclass
class Pair:
    """A running pair of proxies; ``port`` is where the client sends its requests."""

    name: str
    port: int
    host: str
    a: subprocess.Popen[bytes]
    b: subprocess.Popen[bytes]
    b_port: int  # where A connects to B


def run_tulle(
    python: str, path: Path, args: list[str], **kwargs: object
) -> subprocess.Popen[bytes]:
    """``python -m tulle ARGS`` with Tulle from ``path`` (see ``deployed_python``), pinned."""
    return pinned(
        SERVER_CPU, [python, "-m", "tulle", *args], env=dict(os.environ, PYTHONPATH=str(path)),
        cwd=Path(python).parent.parent,  # the venv, not the project: its tulle would come first
        **kwargs,
    )  # fmt: skip


def _sidecar(
    plane: ControlPlane, python: str, path: Path, pod: str, account: str, listener: list[str]
) -> subprocess.Popen[bytes]:
    node = f"sidecar~127.0.0.1~{pod}.{NAMESPACE}~{NAMESPACE}.svc.cluster.local"
    if plane.secure_xds:
        token = plane.token(account, pod)
        listener = ["--xds", plane.secure_xds, "--xds-root-cert", str(plane.root_cert),
                    "--token-file", str(token),
                    "--admin-token-file", str(plane.state / f"{pod}.admin"), *listener]  # fmt: skip
    else:  # the code before issue 17: plain-text xDS, no identity
        listener = ["--xds", plane.xds, *listener]
    return run_tulle(
        python, path,
        ["proxy", "--node-id", node, "--admin-port", str(free_port()), "--log-level", "error",
         *listener],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def start_sidecar_pair(plane: ControlPlane, python: str, spec: PairSpec, backend: int) -> Pair:
    """B in front of nginx, registered as ``b-<name>``; A with its HTTP proxy listener; once a
    request goes through both (B has its certificate, A has B's endpoint)."""
    b_port, a_port = free_port(), free_port()
    b = _sidecar(plane, python, spec.path, f"{spec.server}-0", spec.server,
                 ["--inbound-port", str(b_port), "--app-port", str(backend)])  # fmt: skip
    plane.register(spec.server, b_port, spec.mtls)
    a = _sidecar(plane, python, spec.path, f"{spec.client}-0", spec.client,
                 ["--http-proxy-port", str(a_port)])  # fmt: skip
    pair = Pair(f"tulle-{spec.name}", a_port, spec.host, a, b, b_port)
    deadline = time.monotonic() + 60
    while True:
        for proc in (a, b):
            if proc.poll() is not None:
                raise RuntimeError(f"sidecar of pair {spec.name} exited: {proc.returncode}")
        try:
            reply = httpx.get(f"http://{spec.host}/", proxy=f"http://127.0.0.1:{a_port}")
            if reply.status_code == 200:
                return pair
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"pair {spec.name}: no 200 through A and B within 60 s")
        time.sleep(0.2)


def issue_pem(plane: ControlPlane, account: str, pod: str, directory: Path) -> Path:
    """A certificate and key (one PEM file, as HAProxy's ``crt`` wants) for ``account``, from
    the mesh CA through the Sign call the sidecars make."""
    token = plane.token(account, pod)
    tls = ssl.create_default_context(cafile=plane.root_cert)
    keeper = CertificateKeeper(ca_signer(plane.secure_xds, tls, lambda: read_token_file(token)))
    credentials = asyncio.run(keeper.renew_once())
    path = directory / f"{account}.pem"
    path.write_bytes(credentials.chain_pem + credentials.key_pem)
    path.chmod(0o600)
    return path


def _haproxy(config: Path, text: str) -> subprocess.Popen[bytes]:
    config.write_text(text)
    return pinned(SERVER_CPU, ["haproxy", "-f", str(config)])


HAPROXY_GLOBAL = f"""
global
  nbthread 1
  maxconn 8192
  ssl-default-bind-ciphersuites {CIPHERSUITE}
  ssl-default-server-ciphersuites {CIPHERSUITE}
defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  http-reuse always
"""


def start_haproxy_pair(plane: ControlPlane, work: Path, mtls: bool, backend: int) -> Pair:
    """HAProxy A (plain in; out to B with a client certificate, B's verified against the mesh's
    roots) and HAProxy B (TLS in with ``verify required`` client certificates; plain to nginx),
    or the same two hops in plain text."""
    name = "haproxy-mtls" if mtls else "haproxy-plain"
    b_port, a_port = free_port(), free_port()
    bind_tls = server_tls = ""
    if mtls:
        roots = plane.root_cert
        b_pem = issue_pem(plane, "haproxy-b", "haproxy-b-0", work)
        a_pem = issue_pem(plane, "haproxy-a", "haproxy-a-0", work)
        bind_tls = f" ssl crt {b_pem} ca-file {roots} verify required alpn http/1.1"
        server_tls = f" ssl crt {a_pem} ca-file {roots} verify required alpn http/1.1"
    b = _haproxy(
        work / f"{name}-b.cfg",
        HAPROXY_GLOBAL + f"frontend in\n  bind 127.0.0.1:{b_port}{bind_tls}\n"
        f"  default_backend out\nbackend out\n  server nginx 127.0.0.1:{backend}\n",
    )
    a = _haproxy(
        work / f"{name}-a.cfg",
        HAPROXY_GLOBAL + f"frontend in\n  bind 127.0.0.1:{a_port}\n  default_backend out\n"
        f"backend out\n  server b 127.0.0.1:{b_port}{server_tls}\n",
    )
    wait_port(b_port)
    wait_port(a_port)
    httpx.get(f"http://127.0.0.1:{a_port}/").raise_for_status()
    return Pair(name, a_port, f"web:{SERVICE_PORT}", a, b, b_port)


__all__ = ["PROJECT", "ControlPlane", "Pair", "PairSpec", "start_control_plane"]
