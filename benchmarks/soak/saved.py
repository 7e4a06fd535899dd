"""A soak run kept on disk, so its table can be rendered again (``python -m
benchmarks.soak.saved WORK``) and its figures looked into: ``run.json`` (conditions, windows,
churn, the mesh's final state, processes left), ``outcomes.jsonl`` (one line per request, as the
load generator wrote it) and ``samples.jsonl`` (one line per process sample; the first line is
the offset from their clock, monotonic, to the wall clock the access logs use)."""

from __future__ import annotations

import collections
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from benchmarks.soak import load
from benchmarks.soak.churn import ChurnCounts
from benchmarks.soak.disruptions import Window
from benchmarks.soak.processes import Usage
from benchmarks.soak.report import Soaked, render
from tulle.local.state import MeshState, ReplicaState


def save(run: Soaked, work: Path) -> None:
    """``run`` into ``work`` (its outcomes are there already)."""
    with open(work / "samples.jsonl", "w") as out:
        out.write(json.dumps({"wall_minus_monotonic": time.time() - time.monotonic()}) + "\n")
        for name, seen in run.samples.items():
            for used in seen:
                out.write(json.dumps({"name": name, **asdict(used)}) + "\n")
    kept = {
        "conditions": run.conditions, "began": run.began,
        "windows": [asdict(w) for w in run.windows],
        "churn": {"accepted": run.churn.accepted, "failed": dict(run.churn.failed),
                  "seconds": run.churn.seconds},
        "mesh": asdict(run.mesh) if run.mesh else None, "left": run.left,
    }  # fmt: skip
    (work / "run.json").write_text(json.dumps(kept))


def restore(work: Path) -> Soaked:
    """The run kept in ``work``."""
    kept = json.loads((work / "run.json").read_text())
    samples: dict[str, list[Usage]] = {}
    with open(work / "samples.jsonl") as lines:
        next(lines)
        for line in lines:
            item = json.loads(line)
            samples.setdefault(item.pop("name"), []).append(Usage(**item))
    churn = kept["churn"]
    mesh = kept["mesh"]
    if mesh is not None:
        mesh = MeshState(**{**mesh, "replicas": [ReplicaState(**r) for r in mesh["replicas"]]})
    return Soaked(
        kept["conditions"], kept["began"], load.read(work / "outcomes.jsonl"),
        [Window(**w) for w in kept["windows"]],
        ChurnCounts(churn["accepted"], collections.Counter(churn["failed"]), churn["seconds"]),
        samples, mesh, [tuple(p) for p in kept["left"]],
    )  # fmt: skip


if __name__ == "__main__":
    print(render(restore(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/tulle-soak"))))
