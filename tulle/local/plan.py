"""What to run for a mesh config: one ReplicaPlan per replica of each Workload, with the ports it
gets on this machine and the environment its program sees. The ports come from a PortAllocator
(by default :func:`free_port`)."""

from __future__ import annotations

import ipaddress
import random
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tulle.api.model import MeshModel, ReadinessCheck, Workload
from tulle.xds.node import make_node_id

PortAllocator = Callable[[], int]
LOOPBACK = "127.0.0.1"
POD_FIRST_ADDRESS = "198.18.0.2"
# A pod has its own port space: its sidecar and library use the standard ports. The sidecar's
# admin listener stays on the pod's loopback; its read-only stats listener (/ready and
# /stats/prometheus, Istio's 15020) is what the runner and `tulle top` reach on the pod address.
POD_ADMIN_PORT, POD_INBOUND_PORT, POD_METRICS_PORT = 15000, 15006, 15020
POD_STATS_PORT = 15020
# grpcio 1.85 sends its bootstrap's call credentials (the replica's token) only with this set.
GRPC_CALL_CREDS_FLAG = "GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS"


_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, not handed out before by this process, and below the
    kernel's ephemeral range — so neither another replica nor some outgoing connection's local
    port takes it before the program it is meant for binds it."""
    low, high = _below_ephemeral()
    for _ in range(500):
        port = random.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind((LOOPBACK, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as sock:  # a crowded range: the kernel's choice
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def check_port_free(host: str, port: int, option: str) -> None:
    """Raise a RuntimeError naming ``option`` when something listens on ``host:port`` already
    (another ``tulle up``'s control plane would otherwise answer in this one's place)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as error:
            raise RuntimeError(
                f"{host}:{port} ({option}) is taken: {error.strerror or error}; another tulle up "
                f"or control plane may be running (tulle down), or pass {option} 0 for any free "
                "port"
            ) from None


def _below_ephemeral() -> tuple[int, int]:
    """Up to 12,000 ports just below ``ip_local_port_range`` (20768-32767 by default)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first = 32768
    return max(1024, first - 12000), max(1025, first - 1)


@dataclass(frozen=True)
class SidecarPorts:
    """The ports of a replica's ``tulle proxy`` (a pod's sidecar has no HTTP proxy listener:
    its app's traffic is redirected to the outbound one). ``admin`` is on loopback only;
    ``stats`` (read-only: /ready, /stats/prometheus) on the replica's address."""

    admin: int
    http_proxy: int | None
    inbound: int
    stats: int


@dataclass(frozen=True)
class ReplicaPlan:
    """One process of a Workload (and its sidecar): how to start it and where it listens."""

    name: str  # <workload>-<index>, the pod name of the node id
    workload: Workload
    index: int
    app_ports: dict[str, int]  # port name → the port the app listens on here
    sidecar: SidecarPorts | None = None
    metrics_port: int | None = None  # library mode: the library's /metrics
    env: dict[str, str] = field(default_factory=dict)
    ip: str = LOOPBACK  # the pod's address with --pods
    pod_index: int | None = None  # with --pods: which address and veth
    admin_port: int | None = None  # library mode: the library's admin listener (GET /tap)

    @property
    def mode(self) -> str:
        return self.workload.mesh

    @property
    def node_id(self) -> str:
        mode = self.mode if self.mode in ("library", "proxyless") else "sidecar"
        return make_node_id(mode, self.ip, self.name, self.workload.namespace)  # type: ignore[arg-type]

    @property
    def command(self) -> list[str]:
        """The program and its arguments, ``$(NAME)`` replaced by the replica's variable NAME
        (as Kubernetes expands a container's command and args; ``$$`` is a literal ``$``)."""
        return [expand(part, self.env) for part in (*self.workload.command, *self.workload.args)]

    @property
    def endpoints(self) -> list[tuple[int, int, str]]:
        """``(port callers connect to, service port, protocol)`` per workload port: the
        sidecar's inbound listener for a sidecar-mode replica, else the app's own port (in a
        pod, always the app's port: the pod's rules redirect it to the sidecar)."""
        result = []
        for port in self.workload.ports:
            inbound = self.sidecar is not None and self.pod_index is None
            reach = self.sidecar.inbound if inbound and self.sidecar else self.app_ports[port.name]
            result.append((reach, port.port, port.protocol))
        return result

    def readiness_target(self) -> tuple[str, int, str | None]:
        """``(kind, app port, http path)`` of the readiness check, probed on the app directly
        (as a kubelet probe bypasses the sidecar): the Workload's, else a TCP connect to its
        first port."""
        check: ReadinessCheck | None = self.workload.readiness
        if check is None:
            return ("tcp", self.app_port(None), None)
        return (check.kind, self.app_port(check.port), check.path)

    def app_port(self, reference: str | None) -> int:
        """The port here of a workload port given by name or number (None: the first)."""
        first = next(iter(self.app_ports.values()), 0)
        if reference in self.app_ports:
            return self.app_ports[reference]
        for port in self.workload.ports:
            if reference is not None and reference == str(port.port):
                return self.app_ports[port.name]
        return first


_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """``text`` with ``$(NAME)`` replaced from ``env`` (unknown names stay as written)."""

    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(value, text)


def plan_replicas(
    model: MeshModel,
    control_plane: tuple[str, str],
    allocate: PortAllocator = free_port,
    pods: bool = False,
) -> list[ReplicaPlan]:
    """Every replica of every Workload, with its ports and environment. ``control_plane`` is
    ``(xDS address, API URL)``. On loopback each app gets a free port from ``allocate`` and each
    sidecar an HTTP proxy listener (``HTTP_PROXY``); with ``pods`` each replica is a pod at its
    own address, listening on its declared ports, its sidecar on the standard ones."""
    plans: list[ReplicaPlan] = []
    for workload in model.workloads:
        for index in range(workload.replicas):
            pod_index = len(plans) if pods else None
            plans.append(plan_replica(workload, index, control_plane, allocate, pod_index))
    return plans


def plan_replica(
    workload: Workload,
    index: int,
    control_plane: tuple[str, str],
    allocate: PortAllocator = free_port,
    pod_index: int | None = None,
) -> ReplicaPlan:
    """Replica ``index`` of ``workload`` (pod number ``pod_index`` with --pods). Planned again
    with fresh ports when a replica restarts, so a port taken meanwhile does not pin it down."""
    xds, api = control_plane
    name = f"{workload.name}-{index}"
    pods = pod_index is not None
    ip = pod_address(pod_index) if pod_index is not None else LOOPBACK
    if pods:
        app_ports = {port.name: port.port for port in workload.ports}
    else:
        app_ports = {port.name: allocate() for port in workload.ports}
    sidecar = None
    metrics_port = admin_port = None
    env = dict(workload.env)
    if app_ports:
        env["PORT"] = str(next(iter(app_ports.values())))
    for port_name, number in app_ports.items():
        env[f"PORT_{port_name.upper().replace('-', '_')}"] = str(number)
    env.update(TULLE_WORKLOAD=workload.name, TULLE_REPLICA=name,
               HOST="0.0.0.0" if pods else LOOPBACK)  # fmt: skip
    if workload.mesh == "sidecar" and pods:
        sidecar = SidecarPorts(POD_ADMIN_PORT, None, POD_INBOUND_PORT, POD_STATS_PORT)
    elif workload.mesh == "sidecar":
        sidecar = SidecarPorts(allocate(), allocate(), allocate(), allocate())
        proxy = f"http://{LOOPBACK}:{sidecar.http_proxy}"
        env.update(HTTP_PROXY=proxy, http_proxy=proxy, NO_PROXY="localhost,127.0.0.1",
                   no_proxy="localhost,127.0.0.1")  # fmt: skip
    elif workload.mesh == "library":
        metrics_port = POD_METRICS_PORT if pods else allocate()
        admin_port = POD_ADMIN_PORT if pods else allocate()  # on loopback (the pod's)
        plan_node = make_node_id("library", ip, name, workload.namespace)
        env.update(TULLE_XDS_ADDRESS=xds, TULLE_NODE_ID=plan_node, TULLE_SERVER=api,
                   TULLE_METRICS_PORT=str(metrics_port),
                   TULLE_ADMIN_PORT=str(admin_port))  # fmt: skip
    elif workload.mesh == "proxyless":  # the runner adds GRPC_XDS_BOOTSTRAP (its agent's files)
        env[GRPC_CALL_CREDS_FLAG] = "true"
    return ReplicaPlan(name, workload, index, app_ports, sidecar, metrics_port, env, ip,
                       pod_index, admin_port)  # fmt: skip


def pod_address(index: int) -> str:
    """The address of pod ``index`` (198.18.0.2 onwards; the bridge is 198.18.0.1)."""
    return str(ipaddress.ip_address(POD_FIRST_ADDRESS) + index)
