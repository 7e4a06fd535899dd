"""Telling a sidecar started by ``Processes.sidecar`` to drain or quit as its user does: with the
admin token it wrote at start to its default token file (the sidecar's runtime directory, named
by its pod, namespace and admin port)."""

from __future__ import annotations

import httpx

from tests.e2e.conftest import Sidecar
from tulle.proxy.admin_guard import default_token_path, read_token_file
from tulle.xds.node import parse_node_id


def admin_post(sidecar: Sidecar, path: str) -> httpx.Response:
    """``POST path`` (``/drain``, ``/quitquitquit``) on the sidecar's admin listener."""
    node = parse_node_id(sidecar.node)
    token = read_token_file(default_token_path(node.pod, node.namespace, sidecar.admin_port))
    return httpx.post(f"http://127.0.0.1:{sidecar.admin_port}{path}", timeout=10,
                      headers={"authorization": f"Bearer {token}"})  # fmt: skip
