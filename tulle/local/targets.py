"""Where a local mesh's metrics are served: each sidecar's read-only ``/stats/prometheus`` and
each library app's ``/metrics``, as (workload, URL) pairs for ``tulle top`` and ``tulle check``,
and as a Prometheus ``file_sd_configs`` file (``scrape-targets.json`` in the state directory,
rewritten with ``state.json``) from which the control plane's dashboard reads them, as a real
Prometheus could."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tulle.local.state import MeshState

TARGETS_FILE = "scrape-targets.json"


def metric_targets(mesh: MeshState) -> list[tuple[str, str]]:
    """Where each replica's mesh metrics are served: (workload, URL) pairs."""
    return [(group["labels"]["workload"], _url(group)) for group in target_groups(mesh)]


def _url(group: dict[str, Any]) -> str:
    return f"http://{group['targets'][0]}{group['labels']['__metrics_path__']}"


def target_groups(mesh: MeshState) -> list[dict[str, Any]]:
    """The ``file_sd_configs`` groups: one per metrics page, labelled with its workload and
    replica."""
    groups = []
    for replica in mesh.replicas:
        labels = {"workload": replica.workload, "replica": replica.replica}
        if replica.address:  # where callers reach it: their clusters name it so
            labels["address"] = replica.address
        pages = (
            (replica.stats_port, "/stats/prometheus"),  # the sidecar's read-only listener
            (replica.metrics_port, "/metrics"),  # a library app's
        )
        for port, path in pages:
            if port:
                address = f"{replica.ip}:{port}"
                page = {**labels, "__metrics_path__": path}
                groups.append({"targets": [address], "labels": page})
    return groups


def write_targets(path: Path, mesh: MeshState) -> None:
    """Replace the targets file at once (its readers never see half a file)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(target_groups(mesh), indent=1))
    temporary.replace(path)
