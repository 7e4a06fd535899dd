"""What the metrics and the access log read from a request and its response (the engine's
Request and Response have these; obs does not import the engine, which sits above it)."""

from __future__ import annotations

from typing import Protocol


class RequestView(Protocol):
    """The parts of a request that are recorded."""

    method: str
    path: str
    authority: str
    source_ip: str

    @property
    def body_size(self) -> int: ...

    def header(self, name: str) -> str | None: ...


class ResponseView(Protocol):
    """The parts of a response that are recorded."""

    status: int
    flag: str
    reason: str
    route: str
    cluster: str
    upstream: str
    upstream_workload: str
    attempts: int
