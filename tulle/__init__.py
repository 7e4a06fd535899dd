"""Tulle: a service mesh in Python, driving a sidecar proxy and an in-process library from one
control plane. See ``shared/DESIGN.md`` for the map of packages and layers."""

__version__ = "0.1.0"
