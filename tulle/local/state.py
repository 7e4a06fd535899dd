"""The state directory of a local mesh (``.tulle`` by default): ``state.json`` says what runs
where (written by the runner on every change, atomically), ``logs/`` holds each process's
output, ``controlplane/`` the control plane's own store, ``run/`` the sidecars' admin tokens
and each proxyless replica's certificate directory and gRPC bootstrap (0700; each token and key
0600; all removed when the mesh stops). ``tulle status``, ``logs`` and ``down`` read it; they
never talk to the runner."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

STATE_FILE = "state.json"


@dataclass
class ReplicaState:
    """One replica as ``tulle status`` shows it."""

    workload: str
    replica: str
    mode: str
    address: str = ""  # where callers reach it (the sidecar's inbound listener, or the app)
    ip: str = "127.0.0.1"  # the replica's address (its pod's, with --pods)
    app: str = ""  # the app's own first port (in a pod, redirected to the sidecar like any caller)
    ready: bool = False
    restarts: int = 0
    started_at: float = 0.0
    app_pid: int | None = None
    proxy_pid: int | None = None
    agent_pid: int | None = None  # proxyless: its ``tulle agent``
    certs: str = ""  # proxyless: the directory its agent keeps (grpcio's file_watcher reads it)
    # The sidecar's admin listener, or the library's (GET /tap), on loopback (the pod's, with
    # --pods), and its token (POST /drain and /quitquitquit, GET /tap).
    admin_port: int | None = None
    admin_token_file: str = ""
    stats_port: int | None = None  # sidecar read-only /ready and /stats/prometheus, at ``ip``
    metrics_port: int | None = None  # library metrics (/metrics)
    last_exit: str = ""  # how the app last ended, for a crash loop


@dataclass
class MeshState:
    """What runs: the runner, the control plane, and every replica."""

    runner_pid: int
    api: str = ""
    xds: str = ""
    secure_xds: str = ""  # ADS and the CA over TLS
    control_plane_pid: int | None = None
    control_plane_restarts: int = 0  # times the runner restarted an exited control plane
    control_plane_last_exit: str = ""
    started_at: float = 0.0
    phase: str = "starting"  # starting, running, stopping
    replicas: list[ReplicaState] = field(default_factory=list)
    # With --pods: {"bridge": name, "namespaces": [...]}, for `tulle down --force` after a crash.
    network: dict[str, Any] = field(default_factory=dict)

    def pids(self) -> list[int]:
        """Every process the mesh started, the control plane last."""
        pids = [p for r in self.replicas for p in (r.app_pid, r.proxy_pid, r.agent_pid) if p]
        return pids + ([self.control_plane_pid] if self.control_plane_pid else [])


class StateDir:
    """Paths in a state directory, and reading and writing its ``state.json``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.logs = root / "logs"
        self.control_plane = root / "controlplane"
        self.run = root / "run"

    def prepare(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.control_plane.mkdir(parents=True, exist_ok=True)
        self.run.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.run.chmod(0o700)

    def admin_token(self, replica: str) -> Path:
        """The file a replica's sidecar writes its admin token to."""
        return self.run / f"{replica}.admin-token"

    def certs(self, replica: str) -> Path:
        """The directory a proxyless replica's ``tulle agent`` keeps its files in."""
        return self.run / f"{replica}.certs"

    def grpc_bootstrap(self, replica: str) -> Path:
        """A proxyless replica's ``GRPC_XDS_BOOTSTRAP`` file."""
        return self.run / f"{replica}.grpc-bootstrap.json"

    def log(self, name: str) -> Path:
        """The log file of a process: ``<replica>.app``, ``<replica>.proxy``,
        ``<replica>.agent``, ``controlplane``."""
        return self.logs / f"{name}.log"

    @property
    def state_file(self) -> Path:
        return self.root / STATE_FILE

    def write(self, state: MeshState) -> None:
        """Replace state.json at once (readers never see half a file)."""
        temporary = self.root / f".{STATE_FILE}.{os.getpid()}"
        temporary.write_text(json.dumps(asdict(state), indent=2))
        temporary.replace(self.state_file)

    def read(self) -> MeshState | None:
        """The state, or None when no mesh has run here."""
        try:
            data: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        replicas = [ReplicaState(**item) for item in data.pop("replicas", [])]
        return MeshState(**data, replicas=replicas)

    def clear(self) -> None:
        """The mesh is gone: its state and metrics targets, the admin tokens of sidecars killed
        before they could remove their own, and the proxyless replicas' keys, certificates and
        bootstraps."""
        self.state_file.unlink(missing_ok=True)
        (self.root / "scrape-targets.json").unlink(missing_ok=True)  # tulle.local.targets'
        for token in self.run.glob("*.admin-token"):
            token.unlink(missing_ok=True)
        for bootstrap in self.run.glob("*.grpc-bootstrap.json"):
            bootstrap.unlink(missing_ok=True)
        for certs in self.run.glob("*.certs"):
            shutil.rmtree(certs, ignore_errors=True)


def alive(pid: int | None) -> bool:
    """Whether process ``pid`` exists (and is not a zombie)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
