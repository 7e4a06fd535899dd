"""Shared test helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

CORPUS = Path(__file__).parent / "api" / "corpus"


@pytest.fixture
def corpus() -> Path:
    """The directory of config corpora (valid/ and broken/)."""
    return CORPUS
