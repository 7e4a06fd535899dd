"""The Kubernetes registry at scale: ``--services`` Services with ``--endpoints`` endpoints each
(EndpointSlices and their Pods) in KMock, a real ``tulle controlplane --registry kubernetes``
reading them, and ``--clients`` simulated ADS clients (:mod:`benchmarks.ads_load`, the walk a
grpcio xDS client makes) of one of the services.

Measures: how long the control plane takes to start (list everything, first snapshot); the
time until every client has walked to its endpoints; after a pause, the time from one
EndpointSlice change (a PATCH to KMock) until every client has ACKed the new endpoints; the
control plane's CPU in that update and its RSS (and peak).

    python -m benchmarks.kube_registry [--services 1000] [--endpoints 10] [--clients 1000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import kmock

from benchmarks.ads_fanout import (
    SETTLE_SECONDS,
    STREAMS_PER_CONNECTION,
    Workers,
    cpu_seconds,
    rss_mb,
)
from tests.kube.kmock_server import KMockThread, KubeApi
from tulle.xds import types

NS = "default"
TARGET = "greeter"  # the service the clients call (benchmarks.ads_load.HOST)


def _address(service: int, endpoint: int) -> str:
    return f"10.{service // 250}.{service % 250}.{endpoint + 1}"


def populate(kube: KubeApi, services: int, endpoints: int) -> None:
    """Services, EndpointSlices and Pods straight into KMock's store (its HTTP API would take
    minutes for tens of thousands of objects): what a list then returns."""
    service_res = kmock.resource("v1/services")
    slice_res = kmock.resource("discovery.k8s.io/v1/endpointslices")
    pod_res = kmock.resource("v1/pods")

    async def fill() -> None:
        objects = kube.emulator.objects
        for index in range(services):
            name = TARGET if index == 0 else f"svc-{index}"
            objects[service_res, NS, name] = {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": NS, "resourceVersion": "1"},
                "spec": {"ports": [{"name": "grpc", "port": 50051, "targetPort": 7001}]},
            }  # fmt: skip
            members = []
            for number in range(endpoints):
                pod = f"{name}-{number}"
                objects[pod_res, NS, pod] = {
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": pod, "namespace": NS, "resourceVersion": "1",
                                 "labels": {"app": name, "version": "v1"}},
                    "spec": {"serviceAccountName": name, "containers": [{"name": "app"}]},
                }  # fmt: skip
                members.append(
                    {"addresses": [_address(index, number)], "conditions": {"ready": True},
                     "targetRef": {"kind": "Pod", "name": pod, "namespace": NS}}
                )  # fmt: skip
            objects[slice_res, NS, f"{name}-1"] = {
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"name": f"{name}-1", "namespace": NS, "resourceVersion": "1",
                             "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "grpc", "port": 7001}],
                "endpoints": members,
            }  # fmt: skip

    kube.call(fill, timeout=600)


def start_control_plane(
    workdir: Path, kubeconfig: Path
) -> tuple[subprocess.Popen[str], int, float]:
    tulle = str(Path(sys.executable).parent / "tulle")
    started = time.monotonic()
    proc = subprocess.Popen(
        [tulle, "controlplane", "--registry", "kubernetes", "--kubeconfig", str(kubeconfig),
         "--state-dir", str(workdir / "state"), "--xds-port", "0", "--secure-xds-port", "0",
         "--insecure-xds", "--http-port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()  # printed once the cluster is read and the servers listen
    if "xDS on " not in line:
        raise RuntimeError(f"the control plane did not start: {line!r}")
    xds = int(line.split("xDS on ")[1].split(",")[0].rsplit(":", 1)[1])
    return proc, xds, time.monotonic() - started


def measure(args: argparse.Namespace) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        server = KMockThread(Path(tmp) / "kubeconfig")
        kube = server.start()
        workers: Workers | None = None
        proc: subprocess.Popen[str] | None = None
        try:
            populate(kube, args.services, args.endpoints)
            proc, xds, ready = start_control_plane(Path(tmp), kube.kubeconfig)
            workers = Workers(
                xds, args.clients, min(args.processes, args.clients),
                args.streams_per_connection, types.ENDPOINT,
            )  # fmt: skip
            started = time.monotonic()
            workers.go()
            first, connected = workers.all_walked(60 + args.clients / 100)
            time.sleep(SETTLE_SECONDS)  # the last ACKs of the walk are read: a quiet start
            cpu = cpu_seconds(proc.pid)
            moved = [
                {"addresses": [_address(0, n + args.endpoints)], "conditions": {"ready": True}}
                for n in range(args.endpoints)
            ]
            begin = time.monotonic()
            response = httpx.patch(
                f"{kube.url}/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{TARGET}-1",
                json={"endpoints": moved},
                headers={"content-type": "application/merge-patch+json"},
                timeout=30,
            )
            response.raise_for_status()
            _, updated = workers.all_acked({first}, 120)
            update_cpu = cpu_seconds(proc.pid) - cpu
            rss, peak = rss_mb(proc.pid), rss_mb(proc.pid, "VmHWM")
        finally:
            if workers is not None:
                workers.stop()
            if proc is not None:
                proc.terminate()
                proc.wait(10)
                if proc.stdout:
                    proc.stdout.close()
            server.stop()
    return {
        "ready_s": ready,
        "connect_s": connected - started,
        "update_s": updated - begin,
        "cpu_s": update_cpu,
        "rss_mb": rss,
        "peak_mb": peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10, help="per service")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--processes", type=int, default=2, help="client worker processes")
    parser.add_argument("--streams-per-connection", type=int, default=STREAMS_PER_CONNECTION)
    args = parser.parse_args()
    result = measure(args)
    print(
        f"{args.services} Services x {args.endpoints} endpoints (EndpointSlices, Pods) in KMock, "
        f"{args.clients} ADS clients of one service, {os.cpu_count()} CPUs"
    )
    rows: list[tuple[str, Any]] = [
        ("control plane started, cluster read (s)", f"{result['ready_s']:.2f}"),
        ("all clients walked to their endpoints (s)", f"{result['connect_s']:.2f}"),
        (
            "EndpointSlice PATCH -> every client ACKed the new endpoints (s)",
            f"{result['update_s']:.3f}",
        ),
        ("control-plane CPU in that update (s)", f"{result['cpu_s']:.2f}"),
        (
            "control-plane RSS after / peak (MB)",
            f"{result['rss_mb']:.0f} / {result['peak_mb']:.0f}",
        ),
    ]
    for name, value in rows:
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()
