"""``tulle up --pods`` (root): each replica in its own network namespace, as a Kubernetes pod.
A bridge holds the mesh's network (198.18.0.0/16: the bridge, where the control plane listens, is
198.18.0.1; pods get the next addresses); each service gets a virtual address from 198.19.0.0/16
in every pod's ``/etc/hosts`` (``ip netns exec`` mounts ``/etc/netns/<pod>/hosts`` there), so an
app calls ``http://catalog:8080`` by name with no proxy variable; a sidecar pod's init step
installs the redirect rules (outbound TCP to 15001, inbound to 15006; the proxy's mark, loopback
and the control plane excluded). Everything is removed on exit; what a crash left is listed in
the state file for ``tulle down --force``."""

from __future__ import annotations

import ctypes
import http.client
import ipaddress
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tulle.local.plan import POD_INBOUND_PORT
from tulle.proxy.iptables import RedirectPlan, apply

GATEWAY = "198.18.0.1"
PREFIX = 16
SERVICE_BASE = ipaddress.ip_address("198.19.0.1")
NETNS_ETC = Path("/etc/netns")
SIDECAR_MARK = 0x539
OUTBOUND_PORT = 15001


class PodsError(RuntimeError):
    """A step of building the pod network failed; the message has the command and its error."""


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    if result.returncode != 0:
        raise PodsError(f"{' '.join(args)}: {result.stderr.strip()}")


def _quietly(*args: str) -> None:
    subprocess.run(args, capture_output=True, check=False, timeout=30)


@dataclass
class PodNetwork:
    """The bridge and the pods' namespaces of one mesh (``tag`` keeps names unique)."""

    tag: str
    namespaces: list[str] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"tlbr{self.tag}"

    def namespace(self, replica: str) -> str:
        return f"tulle-{self.tag}-{replica}"

    def create(self) -> None:
        """The bridge, with the gateway address the control plane listens on."""
        if os.geteuid() != 0:
            raise PodsError("--pods needs root (network namespaces, veths and iptables)")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")

    def add_pod(self, replica: str, index: int, address: str, hosts: str) -> str:
        """A namespace for ``replica`` (pod number ``index``) on the bridge at ``address``,
        with ``hosts`` as its /etc/hosts; the namespace's name."""
        namespace = self.namespace(replica)
        outside, inside = f"tl{self.tag}{index}o", f"tl{self.tag}{index}i"
        _run("ip", "netns", "add", namespace)
        self.namespaces.append(namespace)
        _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
        _run("ip", "link", "set", inside, "netns", namespace)
        _run("ip", "link", "set", outside, "master", self.bridge)
        _run("ip", "link", "set", outside, "up")
        inner = ["ip", "netns", "exec", namespace]
        _run(*inner, "ip", "addr", "add", f"{address}/{PREFIX}", "dev", inside)
        _run(*inner, "ip", "link", "set", inside, "up")
        _run(*inner, "ip", "link", "set", "lo", "up")
        # A route for the services' virtual addresses: connect() needs one before the
        # redirect rules can take the connection to the sidecar.
        _run(*inner, "ip", "route", "add", "default", "via", GATEWAY)
        etc = NETNS_ETC / namespace
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(hosts)
        # No name server is reachable from a pod: lookups not in /etc/hosts fail at once
        # (the host's resolv.conf would make every reverse lookup wait for its timeout).
        (etc / "resolv.conf").write_text("# tulle up --pods: names come from /etc/hosts\n")
        return namespace

    def redirect(self, namespace: str) -> None:
        """The sidecar pod's init step: its TCP through the sidecar (the control plane left
        alone, so the sidecar's xDS stream is not redirected)."""
        plan = RedirectPlan(OUTBOUND_PORT, POD_INBOUND_PORT, SIDECAR_MARK,
                            exclude_outbound_cidrs=(f"{GATEWAY}/32",))  # fmt: skip
        try:
            apply(plan, prefix=["ip", "netns", "exec", namespace])
        except RuntimeError as error:
            raise PodsError(f"init step in {namespace}: {error}") from None

    def remove(self) -> None:
        """Delete every namespace (their veths go with them), the bridge and the hosts files."""
        remove_network(self.bridge, self.namespaces)


CLONE_NEWNET = 0x40000000
PROBE_HEADERS = {"User-Agent": "kube-probe/tulle"}
"""A readiness probe names itself as a kubelet's does (a library app traces no probe)."""


def probe_in_pod(namespace: str, kind: str, port: int, path: str | None, timeout: float) -> bool:
    """A readiness probe of the app from inside its pod, on 127.0.0.1 (as the kubelet's probe
    reaches the app without passing the sidecar's inbound policy). Runs on a thread of its own
    that joins the pod's network namespace (setns applies to the calling thread) and ends."""
    outcome: list[bool] = [False]

    def probe() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/var/run/netns/{namespace}") as handle:
            if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                return
        try:
            if kind == "http":
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
                try:
                    connection.request("GET", path or "/", headers=PROBE_HEADERS)
                    outcome[0] = 200 <= connection.getresponse().status < 400
                finally:
                    connection.close()
            else:
                socket.create_connection(("127.0.0.1", port), timeout=timeout).close()
                outcome[0] = True
        except OSError:
            pass

    thread = threading.Thread(target=probe, name=f"probe-{namespace}", daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return outcome[0]


def _delete_veths(namespace: str) -> None:
    """Delete the veth pairs of ``namespace`` now: deleting the namespace alone leaves them to
    the kernel's asynchronous clean-up, which can lag seconds behind on a busy host."""
    listed = subprocess.run(
        ["ip", "-n", namespace, "-o", "link", "show", "type", "veth"],
        capture_output=True, text=True, check=False, timeout=30,
    ).stdout  # fmt: skip
    for line in listed.splitlines():
        parts = line.split(": ")
        if len(parts) > 1:
            _quietly("ip", "-n", namespace, "link", "del", parts[1].split("@")[0])


def remove_namespace(namespace: str) -> None:
    """Delete ``namespace`` (its veth pairs first) and its /etc/netns entries, if there."""
    _delete_veths(namespace)
    _quietly("ip", "netns", "del", namespace)
    shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)


def remove_network(bridge: str, namespaces: Iterable[str]) -> None:
    """Delete ``namespaces`` (:func:`remove_namespace`) and ``bridge`` (missing ones skipped)."""
    for namespace in namespaces:
        remove_namespace(namespace)
    _quietly("ip", "link", "del", bridge)


def hosts_file(services: Sequence[str]) -> str:
    """``/etc/hosts`` of a pod: every service's names at its virtual address."""
    lines = ["127.0.0.1 localhost"]
    for index, host in enumerate(sorted(set(services))):
        names = [host]
        suffix = ".svc.cluster.local"
        if host.endswith(suffix):
            short = host[: -len(suffix)]  # catalog.default
            names += [f"{short}.svc", short, short.split(".")[0]]
        lines.append(f"{SERVICE_BASE + index} {' '.join(names)}")
    return "\n".join(lines) + "\n"
