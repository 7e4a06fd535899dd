"""Running a target for a set time in a process of its own, and reading what libFuzzer reports:
executions, seconds, the input that failed (if one did), and the pending checks that were set
aside. Used by ``python -m fuzz`` (``make fuzz``) and by the test that runs each target
briefly in ``make test``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fuzz.support.runner import ROOT, seeds, working_corpus

_DONE = re.compile(r"Done (\d+) runs in (\d+) second")
_EXECUTED = re.compile(r"stat::number_of_executed_units: (\d+)")
_ARTIFACT = re.compile(r"Test unit written to (\S+)")
_PENDING = re.compile(r"pending check failed \(set aside\): ([^:]+(?: raised \w+)?)")


@dataclass
class Outcome:
    """What one run of a target came to."""

    target: str
    returncode: int
    executions: int
    seconds: int
    output: str
    artifact: str | None = None
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The run ended by its time limit, with no failing input."""
        return self.returncode == 0 and self.artifact is None

    @property
    def rate(self) -> float:
        """Executions per second."""
        return self.executions / self.seconds if self.seconds else float(self.executions)

    def report(self) -> str:
        """What a person needs when the run failed: the end of its output, and the input."""
        lines = self.output.splitlines()
        start = next((i for i, line in enumerate(lines) if "Uncaught Python exception" in line), -1)
        tail = "\n".join(lines[start : start + 60] if start >= 0 else lines[-40:])
        where = f"\nthe failing input: {self.artifact}" if self.artifact else ""
        replay = f"\nreplay: FUZZ_STRICT=1 python -m fuzz.{self.target} {self.artifact}"
        return f"{tail}{where}{replay if self.artifact else ''}"


def run_target(
    target: str,
    seconds: int,
    corpus: Path | None = None,
    artifacts: Path | None = None,
    extra: tuple[str, ...] = (),
) -> Outcome:
    """Fuzz ``target`` for ``seconds`` (its own process): new inputs go to ``corpus`` (the
    working corpus under build/ by default) beside the seeds; a failing input is saved under
    ``artifacts`` (fuzz/crashes/<target>/ by default)."""
    corpus = corpus or working_corpus(target)
    corpus.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", f"fuzz.{target}", f"-max_total_time={seconds}"]
    if artifacts is not None:
        artifacts.mkdir(parents=True, exist_ok=True)
        command.append(f"-artifact_prefix={artifacts}/")
    command += [*extra, str(corpus), str(seeds(target))]
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    began = time.monotonic()
    done = subprocess.run(
        command, cwd=ROOT, env=environment, capture_output=True, text=True, errors="replace",
        timeout=seconds + 120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    finished = _DONE.search(output)
    executed = _EXECUTED.search(output)
    artifact = _ARTIFACT.search(output)
    return Outcome(
        target=target,
        returncode=done.returncode,
        executions=int(executed.group(1)) if executed else 0,
        seconds=int(finished.group(2)) if finished else round(time.monotonic() - began),
        output=output,
        artifact=artifact.group(1) if artifact else None,
        pending=sorted(set(_PENDING.findall(output))),
    )
