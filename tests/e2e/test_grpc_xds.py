"""The control plane, proven with grpcio's own xDS client: real control plane, real gRPC
servers, stock grpcio clients on ``xds:///`` targets, all separate processes on loopback."""

from __future__ import annotations

import collections
import time

import httpx

from tests.e2e.conftest import (
    NODE,
    Client,
    ControlPlane,
    Processes,
    run_client,
    synced,
    wait_until,
)

LONG = "xds:///greeter.default.svc.cluster.local:50051"


def service_entry(ports: dict[str, int]) -> str:
    """A ServiceEntry for greeter with one endpoint per backend, labelled version=<name>."""
    endpoints = "\n".join(
        f"    - {{address: 127.0.0.1, ports: {{grpc: {port}}}, labels: {{version: {name}}}}}"
        for name, port in ports.items()
    )
    return f"""\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter}}
spec:
  hosts: [greeter.default.svc.cluster.local]
  ports: [{{number: 50051, protocol: GRPC, name: grpc}}]
  location: MESH_INTERNAL
  resolution: STATIC
  endpoints:
{endpoints}
"""


SUBSETS = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
"""


def split(v1: int, v2: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
    - route:
        - destination: {{host: greeter, subset: v1}}
          weight: {v1}
        - destination: {{host: greeter, subset: v2}}
          weight: {v2}
"""


def backends(results: list[dict]) -> collections.Counter[str]:
    return collections.Counter(r["backend"] for r in results if r["ok"])


def failures(results: list[dict]) -> list[dict]:
    return [r for r in results if not r["ok"]]


def steady_client(
    plane: ControlPlane, clients: list[Client], target: str = LONG, seconds: int = 40
) -> Client:
    """A client calling every 5 ms until stopped (or ``seconds``), started and registered."""
    client = Client(
        plane.bootstrap(), target, "--count", "100000", "--interval", "0.005",
        "--seconds", str(seconds),
    )  # fmt: skip
    clients.append(client)
    wait_until(lambda: len(client.results) >= 100)
    return client


def two_versions(plane: ControlPlane, processes: Processes, v1: int, v2: int) -> None:
    """greeter with backends v1 and v2, subsets for both, and a v1/v2 split."""
    plane.apply(service_entry({"v1": processes.greeter("v1"), "v2": processes.greeter("v2")}))
    plane.apply(SUBSETS)
    plane.apply(split(v1, v2))


def connected_calls(
    plane: ControlPlane, clients: list[Client], target: str, endpoints: set[str], count: int = 20
) -> list[dict]:
    """``count`` calls of a client on ``target`` made once it had reached every one of
    ``endpoints`` (grpcio's round robin sends every call to the endpoints connected so far:
    on a busy machine the second may connect a dozen calls after the first)."""
    client = Client(plane.bootstrap(), target, "--count", "100000", "--seconds", "60")
    clients.append(client)
    wait_until(lambda: backends(client.results).keys() >= endpoints, timeout=30)
    reached = len(client.results)
    wait_until(lambda: len(client.results) >= reached + count, timeout=30)
    results = client.stop()
    assert failures(results) == []
    return results[reached : reached + count]


def test_service_entry_endpoints_by_long_and_short_name(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    ports = {"a": processes.greeter("a"), "b": processes.greeter("b")}
    control_plane.apply(service_entry(ports))
    for target in (LONG, "xds:///greeter", "xds:///greeter.default:50051"):
        results = connected_calls(control_plane, clients, target, {"a", "b"})
        assert backends(results).keys() == {"a", "b"}
        assert sorted(backends(results).values()) >= [8, 8]  # round robin over both


def test_registered_endpoints(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    for name in ("c", "d"):
        control_plane.register(
            service="hello", address="127.0.0.1", port=processes.greeter(name),
            servicePort=50052, protocol="GRPC", labels={"version": name},
        )  # fmt: skip
    target = "xds:///hello.default.svc.cluster.local:50052"
    results = connected_calls(control_plane, clients, target, {"c", "d"})
    assert backends(results).keys() == {"c", "d"}
    assert min(backends(results).values()) >= 8


def test_weight_changes_under_steady_traffic(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    two_versions(control_plane, processes, 90, 10)
    client = steady_client(control_plane, clients, seconds=60)
    wait_until(lambda: len(client.results) >= 300)

    def share_of_v2_after_the_change(count: int = 300, settle: int = 20) -> float:
        """v2's share of ``count`` calls the client began after it had ACKed the change (the
        first ``settle`` of them left out: grpcio ACKs before its channel has the new routes)."""
        wait_until(lambda: synced(control_plane, NODE), timeout=15)
        acked = time.time()
        wait_until(lambda: sum(r["t"] > acked for r in client.results) >= settle + count, 20)
        picked = [r for r in client.results if r["t"] > acked][settle : settle + count]
        return sum(r.get("backend") == "v2" for r in picked) / count

    # 90/10 over 300 calls: sd = sqrt(300 * 0.1 * 0.9) = 5.2 calls = 1.73%; 3% is 4.0 sd below
    # the 10%, 20% is 5.8 sd above. 50/50: sd = sqrt(300 * 0.5 * 0.5) = 8.7 calls = 2.9%; ±12%
    # is 4.2 sd (the share used to be of the calls in a 1.5 s window, fewer on a busy machine).
    first = client.results[:300]
    assert 0.03 <= sum(r.get("backend") == "v2" for r in first) / 300 <= 0.2
    for (v1, v2), low, high in (((50, 50), 0.38, 0.62), ((0, 100), 1.0, 1.0)):
        control_plane.apply(split(v1, v2))
        assert low <= share_of_v2_after_the_change() <= high, (v1, v2)
    results = client.stop()
    assert len(results) > 500
    assert failures(results) == []


def test_header_match_routing(control_plane: ControlPlane, processes: Processes):
    control_plane.apply(
        service_entry({"v1": processes.greeter("v1"), "v2": processes.greeter("v2")})
    )
    control_plane.apply(SUBSETS)
    control_plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - match:
        - headers:
            x-user: {exact: jason}
      route:
        - destination: {host: greeter, subset: v2}
    - route:
        - destination: {host: greeter, subset: v1}
"""
    )
    jason = run_client(control_plane, LONG, "--count", "20", "--header", "x-user=jason")
    others = run_client(control_plane, LONG, "--count", "20", "--header", "x-user=maria")
    assert backends(jason) == {"v2": 20}
    assert backends(others) == {"v1": 20}


def retrying(attempts: int) -> str:
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter}}
spec:
  hosts: [greeter]
  http:
    - route:
        - destination: {{host: greeter}}
      retries:
        attempts: {attempts}
        retryOn: unavailable
"""


def test_retries_on_unavailable(control_plane: ControlPlane, processes: Processes):
    control_plane.apply(service_entry({"flaky": processes.greeter("flaky", fail_rate=0.5)}))
    control_plane.apply(retrying(0))
    without = run_client(control_plane, LONG, "--count", "300")
    control_plane.apply(retrying(3))  # a new client process: it starts with this config
    with_retries = run_client(control_plane, LONG, "--count", "300")
    # Each call fails with probability 0.5: sd = sqrt(300 * 0.5 * 0.5) = 8.7 calls = 2.9%, ±20%
    # is 6.9 sd. With 3 retries 0.5^4 = 6.25%: sd = sqrt(300 * 0.0625 * 0.9375) = 4.2 calls =
    # 1.4%; 15% is 6.3 sd above.
    assert 0.3 <= len(failures(without)) / 300 <= 0.7
    assert len(failures(with_retries)) / 300 <= 0.15
    assert {r["code"] for r in failures(without)} == {"UNAVAILABLE"}


def test_fault_abort_percentage(control_plane: ControlPlane, processes: Processes):
    control_plane.apply(service_entry({"a": processes.greeter("a")}))
    control_plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - fault:
        abort:
          grpcStatus: RESOURCE_EXHAUSTED
          percentage: {value: 30}
      route:
        - destination: {host: greeter}
"""
    )
    results = run_client(control_plane, LONG, "--count", "1200")
    aborted = failures(results)
    codes = collections.Counter(r["code"] for r in aborted)
    # Binomial(1200, 0.3): standard deviation 1.3%; ±6% is 4.5 of them.
    assert 0.24 <= len(aborted) / 1200 <= 0.36, codes
    assert set(codes) == {"RESOURCE_EXHAUSTED"}, codes


def test_consistent_hash_on_header(control_plane: ControlPlane, processes: Processes):
    ports = {name: processes.greeter(name) for name in ("a", "b", "c", "d")}
    control_plane.apply(service_entry(ports))
    control_plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: greeter}
spec:
  host: greeter
  trafficPolicy:
    loadBalancer:
      consistentHash: {httpHeaderName: x-user}
"""
    )
    chosen = {}
    for user in ("ann", "bob", "cyd", "dan", "eve", "fay", "gus", "hal"):
        results = run_client(control_plane, LONG, "--count", "15", "--header", f"x-user={user}")
        assert failures(results) == []
        seen = backends(results)
        assert len(seen) == 1, (user, seen)
        chosen[user] = next(iter(seen))
    # Eight users all on one of four endpoints by chance: 4 * (1/4)^8 = 6.1e-5, as rare as
    # 4 sd of a normal distribution (6.3e-5).
    assert len(set(chosen.values())) >= 2, chosen


def test_deregistered_endpoint_leaves_rotation(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    registrations = {
        name: {"service": "hello", "address": "127.0.0.1", "port": processes.greeter(name),
               "servicePort": 50052, "protocol": "GRPC"}
        for name in ("c", "d")
    }  # fmt: skip
    for fields in registrations.values():
        control_plane.register(**fields)
    client = steady_client(
        control_plane, clients, "xds:///hello.default.svc.cluster.local:50052", seconds=30
    )
    assert set(backends(client.results)) == {"c", "d"}
    control_plane.deregister(**registrations["d"])
    start = time.time()
    wait_until(lambda: client.results[-1]["t"] > start + 3)
    later = [r for r in client.results if r["t"] > start + 2]
    assert backends(later).keys() == {"c"}
    assert failures(client.stop()) == []


def test_nack_is_reported_and_traffic_stays_on_the_last_good_version(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    two_versions(control_plane, processes, 100, 0)
    client = steady_client(control_plane, clients, seconds=30)
    # Python's re accepts \\Z, RE2 (grpcio's regex engine) does not: the client rejects the route.
    control_plane.apply(
        """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: greeter}
spec:
  hosts: [greeter]
  http:
    - match:
        - headers:
            x-user: {regex: "jason\\\\Z"}
      route:
        - destination: {host: greeter, subset: v2}
    - route:
        - destination: {host: greeter, subset: v2}
"""
    )

    def nacked_routes() -> str | None:
        for node in control_plane.proxy_status()["nodes"]:
            state = node["types"].get("routes")
            if state and state["nack"]:
                return str(state["nack"])
        return None

    wait_until(lambda: nacked_routes() is not None)
    message = nacked_routes()
    assert message is not None
    assert "regex" in message.lower()
    start = time.time()
    wait_until(lambda: client.results[-1]["t"] > start + 1)
    results = client.stop()
    assert failures(results) == []
    assert backends(results).keys() == {"v1"}  # still the last good version (100/0)


def test_control_plane_restart_during_traffic(
    control_plane: ControlPlane, processes: Processes, clients: list[Client]
):
    from tests.e2e.conftest import _stop, start_control_plane

    control_plane.apply(service_entry({"a": processes.greeter("a"), "b": processes.greeter("b")}))
    client = steady_client(control_plane, clients, seconds=40)
    _stop(control_plane.proc)
    during = len(client.results)
    wait_until(lambda: len(client.results) >= during + 100)  # served from the client's cache
    restarted = start_control_plane(
        control_plane.state_dir, control_plane.config_dir,
        control_plane.xds_port, control_plane.http_port,
    )  # fmt: skip
    control_plane.proc = restarted.proc  # stopped by the fixture
    wait_until(lambda: len(restarted.proxy_status()["nodes"]) == 1, timeout=30)
    listed = httpx.get(
        f"{restarted.api}/api/v1/resources?kind=ServiceEntry", headers=restarted.auth
    ).json()["items"]
    assert [i["resource"]["metadata"]["name"] for i in listed] == ["greeter"]
    after = len(client.results)
    wait_until(lambda: len(client.results) >= after + 100)
    results = client.stop()
    assert failures(results) == []
    assert set(backends(results)) == {"a", "b"}
