"""``tulle tap``'s client side: where a workload's replicas serve ``GET /tap`` (their sidecars'
admin listeners, or their library's, read from the local mesh's state), one stream per replica
read on its own thread and merged into one queue, and each event printed as ``linkerd viz tap``
prints it (``req``, ``rsp`` and ``end`` lines) or as JSON."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tulle.local.state import MeshState


class TapError(Exception):
    """A tap cannot start; the message says which replica and why."""


@dataclass(frozen=True)
class TapTarget:
    """One replica's tap: its name, its admin listener's ``/tap`` URL and its token file."""

    replica: str
    url: str
    token_file: str


def tap_targets(mesh: MeshState, workload: str) -> tuple[list[TapTarget], list[str]]:
    """The replicas of ``workload`` (or the one replica so named) that serve a tap, and a line
    for each one that cannot (proxyless gRPC and unmeshed apps have no Tulle data plane)."""
    wanted = [r for r in mesh.replicas if workload in (r.workload, r.replica)]
    if not wanted:
        known = ", ".join(sorted({r.workload for r in mesh.replicas}))
        raise TapError(f"no workload or replica {workload!r}; workloads: {known}")
    if mesh.network:
        raise TapError(
            "with --pods each replica's admin listener is on its pod's loopback, which tulle "
            "tap cannot reach from the host yet"
        )
    targets, skipped = [], []
    for replica in wanted:
        if replica.admin_port and replica.admin_token_file:
            url = f"http://127.0.0.1:{replica.admin_port}/tap"
            targets.append(TapTarget(replica.replica, url, replica.admin_token_file))
        else:
            skipped.append(
                f"{replica.replica}: no tap ({replica.mode} mode has no Tulle data plane)"
            )
    return targets, skipped


Item = tuple[str, dict[str, Any]] | tuple[str, str]  # (replica, event) or (replica, error)


def stream(
    target: TapTarget, params: dict[str, str], out: queue.Queue[Item], stop: threading.Event
) -> None:
    """Read ``target``'s tap until ``stop`` is set or the stream ends; each event, or the
    error that ended it, goes to ``out``."""
    try:
        token = Path(target.token_file).read_text().strip()
    except OSError as error:
        out.put((target.replica, f"cannot read its admin token {target.token_file}: {error}"))
        return
    headers = {"authorization": f"Bearer {token}"}
    timeout = httpx.Timeout(10.0, read=None)
    try:
        with httpx.stream("GET", target.url, params=params, headers=headers, timeout=timeout) as r:
            if r.status_code != 200:
                r.read()
                out.put((target.replica, f"{r.status_code}: {_error_of(r)}"))
                return
            for line in r.iter_lines():
                if stop.is_set():
                    return
                if line:
                    out.put((target.replica, json.loads(line)))
    except httpx.HTTPError as error:
        if not stop.is_set():
            out.put((target.replica, f"{target.url}: {error}"))
        return
    out.put((target.replica, "the tap ended"))


def _error_of(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()


class Merged:
    """The taps of several replicas, read on a thread each, as one sequence of items."""

    def __init__(self, targets: Iterable[TapTarget], params: dict[str, str]) -> None:
        self.items: queue.Queue[Item] = queue.Queue()
        self.stop = threading.Event()
        self.threads = [
            threading.Thread(target=stream, args=(t, params, self.items, self.stop), daemon=True)
            for t in targets
        ]
        for thread in self.threads:
            thread.start()

    def next(self, timeout: float | None = None) -> Item | None:
        """The next item (None: none within ``timeout``, or every stream has ended)."""
        while True:
            try:
                return self.items.get(timeout=0.2 if timeout is None else timeout)
            except queue.Empty:
                if timeout is not None or not any(t.is_alive() for t in self.threads):
                    return None

    def close(self) -> None:
        """Stop reading (each thread ends at its stream's next line or chunk)."""
        self.stop.set()


def _micros(milliseconds: float) -> str:
    return f"{round(milliseconds * 1000)}µs"


def lines(replica: str, number: int, event: dict[str, Any], wide: bool = False) -> list[str]:
    """An event as linkerd prints one: ``req`` (the request), ``rsp`` (its status, the latency
    to the response's last byte, and the mesh's flags and reason when it made the failure) and
    ``end`` (the response's length); an attempt the mesh retried has ``req`` and ``rsp`` only,
    marked ``retried``. ``wide`` adds the peer's identity, the upstream workload, the route and
    cluster, and the request id."""
    proxy = "in" if event["direction"] == "inbound" else "out"
    tls = "true" if event["tls"] else "not_provided_by_remote"
    src, dst = event["src"] or "-", event["dst"] or "-"  # a library's own calls: no source
    common = f"id={replica}:{number} proxy={proxy} src={src} dst={dst} tls={tls}"
    req = (
        f"req {common} :method={event['method']} :authority={event['authority']} "
        f":path={event['path']}"
    )
    if wide:
        extra = {
            "peer": event.get("peer"), "dst_workload": event.get("dst_workload"),
            "route": event.get("route"), "cluster": event.get("cluster"),
            "request_id": event.get("request_id"),
        }  # fmt: skip
        req += "".join(f" {key}={value}" for key, value in extra.items() if value)
    rsp = f"rsp {common} :status={event['status']} latency={_micros(event['latency_ms'])}"
    if event.get("flags") not in (None, "", "-"):
        rsp += f" flags={event['flags']}"
    if event.get("reason"):
        rsp += f" reason={json.dumps(event['reason'])}"
    if event.get("retried"):
        return [req, f"{rsp} retried=true attempt={event.get('attempt')}"]
    attempts = event.get("attempts") or 0
    if attempts > 1:
        rsp += f" attempts={attempts}"
    end = f"end {common} response-length={event['response_bytes']}B"
    return [req, rsp, end]
