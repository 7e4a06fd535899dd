"""``original_destination`` in a network namespace with connection tracking on (a NAT rule loads
it, as Docker, podman and Kubernetes do on their hosts): a connection an iptables REDIRECT sent
to the listener reports where the client dialled; one made straight to the listener reports
None, though the kernel answers SO_ORIGINAL_DST for it too (before the fix, a loopback
sidecar on such a host took every inbound connection for one to its listen port, and so ran
no port's mTLS mode: STRICT was served as plain text)."""

from __future__ import annotations

import ctypes
import os
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from tulle.transport.interception import original_destination

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and iptables need root"),
    pytest.mark.xdist_group("host-network"),  # never beside another (tests/conftest.py)
]

CLONE_NEWNET = 0x40000000


@pytest.fixture(scope="module")
def namespace() -> Iterator[str]:
    """A fresh network namespace with loopback up and a NAT rule that redirects port 9 to 9009
    (connection tracking is then on for every connection in it)."""
    name = f"interception-test-{uuid.uuid4().hex[:8]}"  # not tulle-: pods tests own those
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        run = ["ip", "netns", "exec", name]
        subprocess.run([*run, "ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(
            [*run, "iptables", "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9",
             "-j", "REDIRECT", "--to-ports", "9009"],
            check=True,
        )  # fmt: skip
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_namespace(name: str, work: Callable[[], object]) -> object:
    """``work()``'s result, run on a thread that joined namespace ``name``."""
    outcome: list[object] = []

    def run() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        with open(f"/var/run/netns/{name}") as handle:
            assert libc.setns(handle.fileno(), CLONE_NEWNET) == 0, ctypes.get_errno()
        try:
            outcome.append(work())
        except BaseException as error:  # handed to the test's thread
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert outcome, "the namespace's thread did not finish"
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    return outcome[0]


def accepted_destination(dial_port: int) -> object:
    """Listen on 9009, dial ``dial_port`` on 127.0.0.1, and read the accepted socket's original
    destination."""
    with (
        socket.create_server(("127.0.0.1", 9009)) as server,
        socket.create_connection(("127.0.0.1", dial_port), timeout=10),
    ):
        accepted, _ = server.accept()
        with accepted:
            return original_destination(accepted)


def test_a_redirected_connection_reports_where_the_client_dialled(namespace: str) -> None:
    assert in_namespace(namespace, lambda: accepted_destination(9)) == ("127.0.0.1", 9)


def test_a_direct_connection_reports_none_with_tracking_on(namespace: str) -> None:
    assert in_namespace(namespace, lambda: accepted_destination(9009)) is None
