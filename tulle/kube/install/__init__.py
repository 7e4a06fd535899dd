"""The manifests of ``tulle install``: pure functions from a profile and ``--set`` values to
Kubernetes objects (plain dicts), with no I/O and no Kubernetes client; ``tulle.kube.apply``
sends them to a cluster."""

from __future__ import annotations

from tulle.kube.install.render import render, to_yaml
from tulle.kube.install.values import PROFILES, SET_KEYS, InstallError, Values, values_for

__all__ = ["PROFILES", "SET_KEYS", "InstallError", "Values", "render", "to_yaml", "values_for"]
