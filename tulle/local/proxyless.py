"""A proxyless gRPC replica under ``tulle up`` (``mesh: proxyless``): what a user does by hand
with ``tulle agent`` and ``tulle bootstrap grpc`` (docs/security.md), done by the runner.

- the agent's command: the replica's certificate directory (under the state directory's
  ``run/``, 0700), its token and the trust bundle, its node id's pod and address;
- the app's ``GRPC_XDS_BOOTSTRAP``: secure (TLS to the control plane's secure xDS port, gRFC A65;
  the replica's token as ``jwt_token_file`` call credentials, gRFC A97), the agent's files as the
  ``default`` certificate provider, re-read every :data:`GRPC_REFRESH_SECONDS`;
- the moment the app may start: once the agent has written its first certificate (the token
  file is written last), or never when the agent ends first (a refused token: its log says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

from tulle.agent import TOKEN_FILE
from tulle.agent.bootstrap import grpc_bootstrap
from tulle.local.plan import ReplicaPlan

# How often a proxyless app's grpcio re-reads its agent's files (the bootstrap's file_watcher
# refresh_interval): a renewed certificate, or a root rotation's bundle, is in use within this.
GRPC_REFRESH_SECONDS = 5.0


def agent_args(plan: ReplicaPlan, identity: dict[str, str], certs: Path) -> list[str]:
    """``tulle agent``'s arguments for the replica (after ``python -m tulle``)."""
    return [
        "agent", "--certs", str(certs), "--pod", plan.name, "-n", plan.workload.namespace,
        "--ip", plan.ip, "--xds", identity["TULLE_XDS_ADDRESS"],
        "--xds-root-cert", identity["TULLE_XDS_ROOT_CERT"],
        "--token-file", identity["TULLE_TOKEN_FILE"],
    ]  # fmt: skip


def write_bootstrap(path: Path, plan: ReplicaPlan, xds: str, certs: Path) -> None:
    """The app's gRPC xDS bootstrap, as ``tulle bootstrap grpc`` writes it."""
    bootstrap = grpc_bootstrap(xds, plan.node_id, certs=certs,
                               refresh_interval=GRPC_REFRESH_SECONDS)  # fmt: skip
    path.write_text(json.dumps(bootstrap, indent=2))


async def first_certificate(
    certs: Path, agent: asyncio.subprocess.Process, stopping: asyncio.Event
) -> bool:
    """True once the agent has written its files; False when it exited or ``stopping`` came
    first."""
    while not (certs / TOKEN_FILE).exists():
        if agent.returncode is not None or stopping.is_set():
            return False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), 0.1)
    return True
