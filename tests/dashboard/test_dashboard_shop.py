"""The dashboard against ``tulle up`` of the shop under steady traffic, in headless Chromium
(Debian's, driven by Playwright): one mesh, one browser and one logged-in page for every test.
The login as ``tulle dashboard`` makes it (once, read-only, never the admin token in a URL); the
graph shows every service and every call with its rate; breaking payment-0 shows on its edge
within 15 s and on the payment page as an ejected endpoint; one of the shop's traces opens as a
waterfall; the config page lists what is in force. A real Prometheus (Debian's) scraping the
same mesh from ``tulle up``'s targets file gives ``--prometheus`` the same calls.

``TULLE_DASHBOARD_SCREENSHOTS=1`` also saves the docs' screenshots (docs/dashboard-*.png)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import wait_until
from tests.local.conftest import REPO, TULLE, Mesh, assert_nothing_left, start_mesh, tulle
from tulle.control.prometheus import PrometheusTraffic
from tulle.control.views import graph

pytestmark = pytest.mark.timeout(300)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WORKLOADS = ("frontend", "catalog-v1", "catalog-v2", "catalog-cache", "cart", "payment", "auth")
CALLS = {
    ("unknown", "frontend"), ("frontend", "catalog-v1"), ("frontend", "catalog-v2"),
    ("frontend", "cart"), ("frontend", "payment"), ("frontend", "auth"),
    ("cart", "catalog-v1"),
}  # fmt: skip
SCREENSHOTS = os.environ.get("TULLE_DASHBOARD_SCREENSHOTS") == "1"


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    state_dir = tmp_path_factory.mktemp("dashboard") / "state"
    mesh = start_mesh(state_dir, "examples/shop/")
    assert (state_dir / "scrape-targets.json").is_file()  # where the control plane reads
    yield mesh
    tulle("down", "--state-dir", str(state_dir), check=False)
    assert_nothing_left(state_dir)
    assert not (state_dir / "scrape-targets.json").exists()  # no stale targets for a Prometheus


@pytest.fixture(scope="module")
def api(shop: Mesh) -> str:
    return str(shop.status()["api"])


@pytest.fixture(scope="module")
def traffic(shop: Mesh, prometheus: str) -> Iterator[None]:
    """Pages of the frontend, three at a time, for as long as the module runs."""
    url = f"http://{shop.address('frontend')}/"
    stop = threading.Event()

    def pages(headers: dict[str, str]) -> None:
        with httpx.Client(timeout=10, headers=headers) as client:
            while not stop.is_set():
                with contextlib.suppress(httpx.HTTPError):
                    client.get(url)
                stop.wait(0.05)

    # One in three pages as a tester's: catalog v2 (10 % of the rest) is called all the time.
    kinds: tuple[dict[str, str], ...] = ({}, {}, {"x-canary": "true"})
    threads = [threading.Thread(target=pages, args=(h,), daemon=True) for h in kinds]
    for thread in threads:
        thread.start()
    yield
    stop.set()
    for thread in threads:
        thread.join(timeout=15)


def login_url(shop: Mesh, api: str) -> str:
    """The URL ``tulle dashboard`` gives when there is no browser to open."""
    result = subprocess.run(
        [*TULLE, "dashboard", "--no-browser", "--server", api],
        env={**os.environ, "TULLE_TOKEN": shop.token},
        capture_output=True, text=True, timeout=60, check=True, cwd=REPO,
    )  # fmt: skip
    found = re.search(r"(http://\S+/dashboard/login\?code=\S+)", result.stdout)
    assert found, result.stdout
    return found.group(1)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def page(browser: Browser, shop: Mesh, api: str, traffic: None) -> Iterator[Page]:
    """A page logged in as a user does: the URL ``tulle dashboard`` prints."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(login_url(shop, api))
    page.wait_for_url(f"{api}/dashboard/")
    yield page
    context.close()


def test_login_works_once_and_only_reads(shop: Mesh, api: str):
    url = login_url(shop, api)
    assert shop.token not in url
    with httpx.Client() as client:
        answer = client.get(url)
        assert answer.status_code == 303, answer.text
        assert answer.headers["location"] == "/dashboard/"
        cookie = answer.headers["set-cookie"]
        assert "HttpOnly" in cookie, cookie
        assert "SameSite=Strict" in cookie, cookie
        assert shop.token not in cookie
        assert client.get(url).status_code == 401  # spent: the URL in the history is no key
        assert client.get(f"{api}/api/v1/graph").status_code == 200  # the session cookie
        assert client.get(f"{api}/api/v1/traces").status_code == 200
        refused = client.post(f"{api}/api/v1/resources", content="kind: Nothing\n")
        assert refused.status_code == 403, refused.text
        assert "may only read" in refused.json()["error"]
        assert client.get(f"{api}/api/v1/endpoints").status_code == 403
        assert client.post(f"{api}/api/v1/dashboard/logins").status_code == 403
    assert httpx.get(f"{api}/api/v1/graph").status_code == 401  # no cookie, no token


def edges_shown(page: Page) -> dict[tuple[str, str], dict[str, str]]:
    rows = page.locator("[data-testid=edge-row]")
    found = {}
    for index in range(rows.count()):
        row = rows.nth(index)
        key = (row.get_attribute("data-source") or "", row.get_attribute("data-target") or "")
        found[key] = {
            "rps": row.get_attribute("data-rps") or "0",
            "class": row.get_attribute("class") or "",
            "replicas": row.locator("[data-testid=edge-replicas]").inner_text(),
        }
    return found


SNAPSHOT = """() => ({
  rows: [...document.querySelectorAll("[data-testid=edge-row]")]
    .map(r => [r.dataset.source, r.dataset.target, Number(r.dataset.rps)]),
  nodes: window.tulleGraph ? window.tulleGraph.nodes().map(n => n.id()) : [],
  edges: window.tulleGraph ? window.tulleGraph.edges()
    .map(e => [e.source().id(), e.target().id(), e.data("label")]) : [],
})"""
"""The graph and its table as the page shows them at one moment (read in one go: a refresh
may change them between two reads)."""


def test_graph_shows_every_service_and_call(page: Page):
    page.goto(page.url.split("#")[0] + "#/graph")
    seen: list[dict] = []

    def complete() -> bool:
        seen[:] = [page.evaluate(SNAPSHOT)]
        return {(source, target) for source, target, _ in seen[0]["rows"]} >= CALLS

    wait_until(complete, timeout=30, interval=0.5)
    shown = seen[0]
    assert all(rps > 0 for source, target, rps in shown["rows"] if (source, target) in CALLS)
    assert set(WORKLOADS) <= set(shown["nodes"]), shown["nodes"]
    assert {(source, target) for source, target, _ in shown["edges"]} >= CALLS
    labels = [label for _, _, label in shown["edges"]]
    assert any("mTLS" in label and "p99" in label for label in labels), labels
    page.select_option("[data-testid=graph-window]", "60")
    page.get_by_text("Calls in the last 60 s", exact=False).wait_for()
    if SCREENSHOTS:
        page.locator("[data-testid=graph]").screenshot(path=str(REPO / "docs/dashboard-graph.png"))


def test_broken_payment_shows_on_its_edge_and_the_service_page(page: Page, shop: Mesh):
    page.goto(page.url.split("#")[0] + "#/graph")
    page.select_option("[data-testid=graph-window]", "10")
    page.get_by_text("Calls in the last 10 s", exact=False).wait_for()

    def edge_healthy() -> bool:  # the shop's own chaos ejects a replica now and then
        edge = edges_shown(page).get(("frontend", "payment"))
        return edge is not None and "bad" not in edge["class"]

    wait_until(edge_healthy, timeout=60, interval=0.5)
    payment_0 = f"http://{shop.replica('payment-0')['app']}"
    httpx.post(f"{payment_0}/break", timeout=10).raise_for_status()
    try:
        broke = time.monotonic()

        def edge_degraded() -> bool:
            edge = edges_shown(page).get(("frontend", "payment"), {})
            return "bad" in edge.get("class", "") and "payment-0" in edge.get("replicas", "")

        wait_until(edge_degraded, timeout=15, interval=0.25)
        assert time.monotonic() - broke < 15
        label = page.evaluate("window.tulleGraph.getElementById('frontend->payment').data('label')")
        assert "payment-0" in label, label
        page.goto(page.url.split("#")[0] + "#/service/payment")
        ejected = page.locator("[data-testid=endpoint-row][data-ejected=true]")
        ejected.first.wait_for()
        assert "payment-0" in ejected.first.inner_text()
        assert "ejected by frontend" in ejected.first.inner_text()
        assert page.locator("[data-testid=proxy-row]").count() == 3  # payment's sidecars
        assert "VirtualService" in page.locator("main").inner_text()
    finally:
        httpx.post(f"{payment_0}/heal", timeout=10)


CALLED = {"frontend", "cart", "payment", "auth"}  # the services a page of the shop reaches


def test_a_trace_opens_as_a_waterfall(page: Page, shop: Mesh, api: str):
    """The shop's own traces (its Mesh samples every request), found with the traces page's
    filter and drawn as a waterfall: the frontend's page, its calls and the callees' spans, each bar where
    the trace store's answer puts it."""
    page.goto(page.url.split("#")[0] + "#/traces")
    page.locator("[data-testid=filter-service]").fill("cart")
    rows = page.locator("[data-testid=trace-row]")

    def only_carts() -> bool:
        shown = [rows.nth(i).inner_text() for i in range(rows.count())]
        return bool(shown) and all("cart" in row for row in shown)

    wait_until(only_carts, timeout=30, interval=0.25)
    link = rows.first.locator("[data-testid=trace-link]")
    trace_id = (link.get_attribute("href") or "").rsplit("/", 1)[-1]
    link.click()
    page.wait_for_url(re.compile(f"#/trace/{trace_id}$"))
    spans = page.locator("[data-testid=span-row]")
    spans.first.wait_for()
    answers: list[dict] = []

    def shown_as_stored() -> bool:
        """The page shows the trace as the store holds it, once it holds every service's
        spans (each workload exports its own, a second apart at most: a trace may still be
        receiving spans when the page reads it: then read it again)."""
        answers[:] = [httpx.get(f"{api}/api/v1/traces/{trace_id}", headers=shop.auth).json()]
        stored = {span["service"] for span in answers[0]["spans"]}
        if stored >= CALLED and spans.count() == len(answers[0]["spans"]):
            return True
        page.reload()
        spans.first.wait_for()
        return False

    wait_until(shown_as_stored, timeout=20, interval=0.5)
    trace = answers[0]
    services = {spans.nth(i).get_attribute("data-service") for i in range(spans.count())}
    assert services >= CALLED, services
    assert spans.first.get_attribute("data-service") == "frontend"  # the root, on top
    for index, span in enumerate(trace["spans"]):
        bar = spans.nth(index).locator(".bar")
        offset = float(bar.evaluate("b => b.style.marginLeft").rstrip("%"))
        assert offset == pytest.approx(span["offsetMs"] / trace["durationMs"] * 100, abs=0.01)
    if SCREENSHOTS:
        page.locator("main").screenshot(path=str(REPO / "docs/dashboard-trace.png"))


def test_config_page_lists_what_is_in_force(page: Page):
    page.goto(page.url.split("#")[0] + "#/config")
    rows = page.locator("[data-testid=config-row]")
    rows.first.wait_for()
    text = page.locator("[data-testid=config]").inner_text()
    assert "VirtualService" in text
    assert "default/payment" in text
    assert "examples/shop/traffic.yaml" in text
    specs = page.locator("[data-testid=config-row] details")
    specs.first.locator("summary").click()
    status = page.locator("#status")
    before = status.inner_text()
    wait_until(lambda: status.inner_text() != before, timeout=15, interval=0.2)  # refreshed
    assert specs.first.get_attribute("open") is not None  # what the user opened stays open
    assert specs.nth(1).get_attribute("open") is None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def prometheus(shop: Mesh, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's Prometheus scraping the shop every second from ``tulle up``'s targets file
    (started with the traffic, so it has readings by the time its test asks)."""
    tmp_path = tmp_path_factory.mktemp("prometheus")
    config = tmp_path / "prometheus.yml"
    targets = shop.state_dir / "scrape-targets.json"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: tulle\n    file_sd_configs:\n"
        f"      - files: [{json.dumps(str(targets))}]\n        refresh_interval: 1s\n"
    )
    port = free_port()
    process = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(f"{url}/-/ready", timeout=2).status_code == 200
            return False

        wait_until(ready, timeout=30, interval=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


def prometheus_calls(url: str) -> set[tuple[str, str]]:
    """The graph's calls over the last 5 s as ``--prometheus`` reads them (on a thread of its
    own: Playwright's page runs an event loop in this one)."""

    async def ask() -> set[tuple[str, str]]:
        source = PrometheusTraffic(url)
        try:
            delta = await source.delta(5)
        finally:
            await source.stop()
        return {(e["source"], e["target"]) for e in graph(delta, ())["edges"]}

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result()


def test_prometheus_gives_the_same_calls(prometheus: str, shop: Mesh, api: str, traffic: None):
    wait_until(lambda: prometheus_calls(prometheus) >= CALLS, timeout=60, interval=1)
    local = httpx.get(f"{api}/api/v1/graph", headers=shop.auth).json()
    assert {(e["source"], e["target"]) for e in local["edges"]} >= CALLS
    assert local["source"].startswith("the mesh's own metrics")
