"""``tulle tap``'s client side without a mesh: which replicas it taps (and why not the others),
and how it prints an event (linkerd's req/rsp/end lines)."""

from __future__ import annotations

import pytest

from tulle.local.state import MeshState, ReplicaState
from tulle.local.tap import TapError, TapTarget, lines, tap_targets

EVENT = {
    "direction": "outbound", "src": "127.0.0.1", "dst": "127.0.0.1:9001", "tls": True,
    "peer": "spiffe://cluster.local/ns/default/sa/payment", "dst_workload": "payment",
    "method": "POST", "authority": "payment:8080", "path": "/pay", "status": 503,
    "latency_ms": 12.5, "response_bytes": 22, "flags": "URX", "reason": None, "route": "default",
    "cluster": "outbound|8080||payment.default.svc.cluster.local", "attempts": 3,
    "retried": False, "request_id": "r-1",
}  # fmt: skip


def mesh(*replicas: ReplicaState, pods: bool = False) -> MeshState:
    return MeshState(runner_pid=1, replicas=list(replicas), network={"bridge": "b"} if pods else {})


SIDECAR = ReplicaState("frontend", "frontend-0", "sidecar", admin_port=15000,
                       admin_token_file="/run/frontend-0.admin-token")  # fmt: skip
LIBRARY = ReplicaState("cart", "cart-0", "library", admin_port=15001,
                       admin_token_file="/run/cart-0.admin-token")  # fmt: skip
PROXYLESS = ReplicaState("auth", "auth-0", "proxyless")


def test_a_workload_or_one_replica_is_tapped_at_its_admin_listener():
    assert tap_targets(mesh(SIDECAR, LIBRARY), "cart") == (
        [TapTarget("cart-0", "http://127.0.0.1:15001/tap", "/run/cart-0.admin-token")], [],
    )  # fmt: skip
    assert tap_targets(mesh(SIDECAR, LIBRARY), "frontend-0")[0][0].replica == "frontend-0"


def test_a_replica_with_no_tulle_data_plane_is_named_not_tapped():
    assert tap_targets(mesh(PROXYLESS), "auth") == (
        [], ["auth-0: no tap (proxyless mode has no Tulle data plane)"],
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "name", "message"),
    [
        (mesh(SIDECAR), "nope", "no workload or replica 'nope'; workloads: frontend"),
        (mesh(SIDECAR, pods=True), "frontend", "with --pods each replica's admin listener is on"),
    ],
)
def test_what_cannot_be_tapped_says_why(state: MeshState, name: str, message: str):
    with pytest.raises(TapError) as refused:
        tap_targets(state, name)
    assert str(refused.value).startswith(message)


def test_an_event_prints_as_linkerds_three_lines():
    assert lines("payment-0", 7, EVENT) == [
        "req id=payment-0:7 proxy=out src=127.0.0.1 dst=127.0.0.1:9001 tls=true :method=POST "
        ":authority=payment:8080 :path=/pay",
        "rsp id=payment-0:7 proxy=out src=127.0.0.1 dst=127.0.0.1:9001 tls=true :status=503 "
        "latency=12500µs flags=URX attempts=3",
        "end id=payment-0:7 proxy=out src=127.0.0.1 dst=127.0.0.1:9001 tls=true "
        "response-length=22B",
    ]  # fmt: skip


def test_a_retried_attempt_and_a_mesh_reason_and_wide_output():
    retried = {**EVENT, "retried": True, "attempt": 1, "flags": "UF",
               "reason": "upstream connect refused 127.0.0.1:9001", "tls": False, "src": ""}  # fmt: skip
    req, rsp = lines("frontend-0", 1, retried, wide=True)
    assert req.startswith("req id=frontend-0:1 proxy=out src=- dst=127.0.0.1:9001 ")
    assert " tls=not_provided_by_remote " in req
    assert req.endswith(
        " peer=spiffe://cluster.local/ns/default/sa/payment dst_workload=payment route=default "
        "cluster=outbound|8080||payment.default.svc.cluster.local request_id=r-1"
    )
    assert rsp.endswith(
        ':status=503 latency=12500µs flags=UF reason="upstream connect refused 127.0.0.1:9001" '
        "retried=true attempt=1"
    )
