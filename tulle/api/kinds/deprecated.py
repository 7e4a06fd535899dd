"""Deprecated spellings Istio still honours, read as the fields that replaced them: each model
that has one declares it (so the loader reads it and checks its type and bounds) and calls these
before validation, which fill in the new field when the file does not set it. The WARNING that
names the new spelling is the cross-check's (:mod:`tulle.api.checks_deprecated`).

- OutlierDetection ``consecutiveErrors: N`` (N > 0): Istio sends it as Envoy's consecutive
  gateway failures (502, 503 and 504) with the consecutive-5xx detection off
  (istio/api#617; ``applyOutlierDetection``), unless ``consecutiveGatewayErrors`` /
  ``consecutive5xxErrors`` are set, which win;
- VirtualService ``mirrorPercent: N`` (an integer percent): ``mirrorPercentage: {value: N}``
  unless that is set;
- a fault's ``delay.percent: N``: ``delay.percentage: {value: N}`` unless that is set.
  (``abort.percent`` is no longer in Istio's API: its proto reserves the name.)"""

from __future__ import annotations

from typing import Any

INT32_MAX = 2**31 - 1


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def consecutive_errors(data: Any) -> Any:
    """An OutlierDetection's raw fields with ``consecutiveErrors`` read as Istio reads it."""
    if isinstance(data, dict) and _int_in(data.get("consecutiveErrors"), 1, INT32_MAX):
        data = dict(data)
        data.setdefault("consecutiveGatewayErrors", data["consecutiveErrors"])
        data.setdefault("consecutive5xxErrors", 0)
    return data


def integer_percent(data: Any, old: str, new: str) -> Any:
    """Raw fields with the integer percent ``old`` read as the Percent ``new``."""
    if isinstance(data, dict) and new not in data and _int_in(data.get(old), 0, 100):
        data = {**data, new: {"value": float(data[old])}}
    return data
