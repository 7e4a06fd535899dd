"""Who may do what on the control plane's HTTP API (issue 17, section 3), against a real control
plane in this process: without a token nothing but ``/healthz`` answers; the admin token does
everything; a workload's bootstrap token registers and deregisters only endpoints of its own
identity and of the services its Workload serves, and can neither take over another workload's
endpoint nor read or change config. Each refusal is a 401 or 403 that says why."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tulle.control.app import ControlPlane
from tulle.security.tokens import BootstrapTokens, admin_token, read_token_file

pytestmark = pytest.mark.timeout(120)

CONFIG = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: payment}
spec:
  command: [python3, payment.py]
  ports: [{name: http, port: 8080}]
  serviceAccount: payment
---
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: frontend}
spec:
  command: [python3, frontend.py]
  ports: [{name: http, port: 8080}]
  serviceAccount: frontend
"""

ENTRY = """\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: probe}
spec:
  hosts: [probe.example.com]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
"""


def payment(port: int, **extra: Any) -> dict[str, Any]:
    return {"service": "payment", "address": "127.0.0.1", "port": port, **extra}


Scenario = Callable[[httpx.AsyncClient, dict[str, dict[str, str]]], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario) -> None:
    """Run ``scenario`` against a control plane with CONFIG, given a client and the headers of
    each caller: ``admin``, ``payment`` and ``frontend`` (their bootstrap tokens)."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "mesh.yaml").write_text(CONFIG)
    state = tmp_path / "state"
    tokens = BootstrapTokens(state)
    callers = {"admin": admin_token(state)}
    for name in ("payment", "frontend"):
        callers[name] = read_token_file(tokens.issue("default", name, f"{name}-0"))
    headers = {name: {"authorization": f"Bearer {token}"} for name, token in callers.items()}

    async def main() -> None:
        plane = ControlPlane([tmp_path / "config"], state, "127.0.0.1", 0, 0, 0)
        await plane.start()
        try:
            base = f"http://127.0.0.1:{plane.http_port}"
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                await scenario(client, headers)
        finally:
            await plane.stop(0)

    asyncio.run(main())


def test_without_a_token_only_health_answers(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> None:
        assert (await client.get("/healthz")).text == "ok\n"
        for method, path in (
            ("GET", "/api/v1/resources"), ("POST", "/api/v1/resources"),
            ("DELETE", "/api/v1/resources/ServiceEntry/default/probe"),
            ("GET", "/api/v1/endpoints"), ("POST", "/api/v1/endpoints"),
            ("DELETE", "/api/v1/endpoints"), ("GET", "/api/v1/proxy-status"),
            ("GET", "/api/v1/proxy-config"), ("GET", "/api/v1/config-status"),
        ):  # fmt: skip
            answer = await client.request(method, path, content=ENTRY.encode())
            assert answer.status_code == 401, (method, path)
            assert answer.headers["www-authenticate"] == 'Bearer realm="tulle"'
            assert "this API needs a token" in answer.json()["error"]
        wrong = await client.get("/api/v1/resources", headers={"authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert wrong.json()["error"] == "token refused: unknown or revoked bootstrap token"
        basic = await client.get("/api/v1/resources", headers={"authorization": "Basic eDp5"})
        assert basic.json()["error"] == "Authorization must be 'Bearer <token>'"

    run(tmp_path, scenario)


def test_the_admin_token_does_everything(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> None:
        admin = headers["admin"]
        assert (await client.post("/api/v1/resources", content=ENTRY, headers=admin)).is_success
        listed = (await client.get("/api/v1/resources", headers=admin)).json()["items"]
        names = {item["resource"]["metadata"]["name"] for item in listed}
        assert names == {"payment", "frontend", "probe"}
        # The admin (the runner, Kubernetes' endpoint controller) registers any workload.
        registered = await client.post(
            "/api/v1/endpoints", json=payment(9001, serviceAccount="payment"), headers=admin
        )
        assert registered.status_code == 200, registered.text
        gone = await client.delete("/api/v1/resources/ServiceEntry/default/probe", headers=admin)
        assert gone.status_code == 200

    run(tmp_path, scenario)


def test_a_workload_registers_only_its_own_endpoints(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> None:
        own = await client.post("/api/v1/endpoints", json=payment(9001), headers=headers["payment"])
        assert own.status_code == 200, own.text
        assert own.json()["registered"]["service_account"] == "payment"  # from its token
        # frontend's token cannot make frontend an endpoint of payment (its traffic would go
        # there), with its own service account or with payment's.
        for claim in ({}, {"serviceAccount": "payment"}):
            hijack = await client.post(
                "/api/v1/endpoints", json=payment(9002, **claim), headers=headers["frontend"]
            )
            assert hijack.status_code == 403, hijack.text
        refused = await client.post(
            "/api/v1/endpoints", json=payment(9002), headers=headers["frontend"]
        )
        assert refused.json()["error"] == (
            "workload ns/default/sa/frontend may not register an endpoint of "
            "payment.default.svc.cluster.local: no Workload of namespace default with "
            "serviceAccount frontend serves it (it serves: frontend.default.svc.cluster.local)"
        )
        claimed = await client.post(
            "/api/v1/endpoints",
            json=payment(9002, serviceAccount="payment"),
            headers=headers["frontend"],
        )
        assert "this registration belongs to ns/default/sa/payment" in claimed.json()["error"]
        # Nor remove or overwrite payment's endpoint.
        for method in ("DELETE", "POST"):
            answer = await client.request(
                method,
                "/api/v1/endpoints",
                json=payment(9001, serviceAccount="frontend"),
                headers=headers["frontend"],
            )
            assert answer.status_code == 403, (method, answer.text)
            assert "the endpoint belongs to ns/default/sa/payment" in answer.json()["error"]
        # Another namespace is another identity.
        elsewhere = await client.post(
            "/api/v1/endpoints",
            json=payment(9003, namespace="shop", serviceAccount="payment"),
            headers=headers["payment"],
        )
        assert elsewhere.status_code == 403
        endpoints = (await client.get("/api/v1/endpoints", headers=headers["admin"])).json()
        assert [(e["port"], e["service_account"]) for e in endpoints["items"]] == [
            (9001, "payment")
        ]
        mine = await client.request(
            "DELETE", "/api/v1/endpoints", json=payment(9001), headers=headers["payment"]
        )
        assert mine.status_code == 200, mine.text

    run(tmp_path, scenario)


def test_a_workload_token_reads_and_changes_no_config(tmp_path: Path) -> None:
    async def scenario(client: httpx.AsyncClient, headers: dict[str, dict[str, str]]) -> None:
        workload = headers["payment"]
        for method, path in (
            ("POST", "/api/v1/resources"), ("GET", "/api/v1/resources"),
            ("DELETE", "/api/v1/resources/Workload/default/payment"),
            ("GET", "/api/v1/endpoints"), ("GET", "/api/v1/proxy-status"),
            ("GET", "/api/v1/proxy-config?node=x"), ("GET", "/api/v1/config-status"),
        ):  # fmt: skip
            answer = await client.request(method, path, content=ENTRY.encode(), headers=workload)
            assert answer.status_code == 403, (method, path)
            assert answer.json()["error"].startswith(
                f"workload ns/default/sa/payment may not {method} {path.split('?')[0]}"
            )
        listed = (await client.get("/api/v1/resources", headers=headers["admin"])).json()
        assert {item["resource"]["kind"] for item in listed["items"]} == {"Workload"}

    run(tmp_path, scenario)
