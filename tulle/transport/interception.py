"""Transparent interception: the original destination of a connection an iptables REDIRECT sent
to the proxy, and marking the proxy's own connections so the rules let them pass."""

from __future__ import annotations

import socket
import struct

SO_ORIGINAL_DST = 80
SO_MARK = 36
PROXY_MARK = 0x539  # 1337, as Istio's


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """``(ip, port)`` the client dialled before the REDIRECT; None when not redirected.

    Where connection tracking is on (a host with Docker, podman or Kubernetes: any NAT rule
    loads it), the kernel answers for every tracked connection, redirected or not; the one
    not redirected is the one whose original destination is the socket's own address."""
    try:
        raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
    except OSError:
        return None
    port = struct.unpack_from("!H", raw, 2)[0]
    address = socket.inet_ntoa(raw[4:8])
    try:
        if sock.getsockname()[:2] == (address, port):
            return None
    except OSError:
        return None
    return address, port


def marked_socket(mark: int) -> socket.socket:
    """A non-blocking TCP socket whose packets carry ``mark`` (needs CAP_NET_ADMIN)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setblocking(False)
    return sock
