"""A short run of every fuzz target (fuzz/), each in its own process as ``make fuzz`` runs them,
from its seeds and a fresh corpus: a target that breaks (an import, a harness out of step
with the front ends) or an input that fails a check fails the test, with the input saved
under fuzz/work/<target>/test-crashes/ and the command that replays it. FUZZ_TEST_SECONDS
sets the time per target (3 by default; the whole run is about half a minute)."""

from __future__ import annotations

import os

import pytest

from fuzz.support.campaign import run_target
from fuzz.support.runner import TARGETS, work

SECONDS = int(os.environ.get("FUZZ_TEST_SECONDS", "3"))


@pytest.mark.parametrize("target", TARGETS)
def test_a_short_run_finds_nothing(target, tmp_path):
    artifacts = work(target) / "test-crashes"
    outcome = run_target(target, SECONDS, corpus=tmp_path / "corpus", artifacts=artifacts)
    assert outcome.ok, outcome.report()
    assert outcome.executions > 0, outcome.report()
