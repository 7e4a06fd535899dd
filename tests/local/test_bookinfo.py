"""Istio's traffic-management tasks on ``tulle up -f examples/bookinfo/``, with upstream's own
networking files (../shared/corpus/istio/samples/bookinfo/networking/, applied unchanged with
``tulle apply``) and each task checked from outside as istio.io describes it: the product page
a browser gets. One mesh for the module; each test applies what its task applies, waits until
the sidecars that route the calls have it (their ``/config_dump``), then looks at pages.

The tasks (istio.io/latest/docs/tasks/traffic-management/): request routing, fault injection,
traffic shifting, request timeouts, circuit breaking. The request-timeouts and circuit-breaking
tasks' YAML is inline in their pages, not sample files: it is here, as the pages give it. The
circuit-breaking task's httpbin and fortio (a client in the mesh) run in the same mesh as
Bookinfo: tests/e2e/http_backend.py plays both (``/call?url=U`` is a call from inside).

Then a GAMMA consumer route: a client in namespace ``consumer`` and its team's HTTPRoute for
Bookinfo's reviews (a 0.5 s timeout, every version), which changes that client's calls only.

Last, the locality-failover task (istio.io/latest/docs/tasks/traffic-management/
locality-load-balancing/failover/) on Bookinfo: productpage in region1/zone1 calls reviews v1,
v2 and v3 in region1/zone1, region2/zone2 and region3/zone3 (examples/bookinfo/workloads.yaml),
under the task's DestinationRule applied to reviews (examples/bookinfo-tasks/, a file of Tulle's
own: upstream's Bookinfo networking has no locality rule); v1's sidecar is drained, as the task
drains its region1 sidecar."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.e2e.conftest import wait_until
from tests.local.conftest import REPO, Mesh, assert_nothing_left, start_mesh, tulle, workload
from tulle.cli.main import app

# Upstream's files, whole and unchanged, beside the checkout (CI has ../shared there too).
NETWORKING = REPO.parent / "shared" / "corpus" / "istio" / "samples" / "bookinfo" / "networking"
# The locality-failover task's DestinationRule, applied to reviews: Tulle's own file.
LOCALITY_FAILOVER = REPO / "examples" / "bookinfo-tasks" / "locality-failover.yaml"
REVIEWS_ERROR = "Error fetching product reviews!"
REVIEWS_SORRY = "Sorry, product reviews are currently unavailable for this book."
RATINGS_UNAVAILABLE = "Ratings service is currently unavailable"

# The request-timeouts task, steps 1, 2 and 4, as istio.io gives them (Istio APIs tab).
REVIEWS_V2 = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
    - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
"""
RATINGS_DELAY_2S = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
spec:
  hosts:
  - ratings
  http:
  - fault:
      delay:
        percentage:
          value: 100
        fixedDelay: 2s
    route:
    - destination:
        host: ratings
        subset: v1
"""
REVIEWS_V2_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts:
  - reviews
  http:
  - route:
    - destination:
        host: reviews
        subset: v2
    timeout: 0.5s
"""
# The circuit-breaking task's DestinationRule, as istio.io gives it.
HTTPBIN_CIRCUIT_BREAKER = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: httpbin
spec:
  host: httpbin
  trafficPolicy:
    connectionPool:
      tcp:
        maxConnections: 1
      http:
        http1MaxPendingRequests: 1
        maxRequestsPerConnection: 1
    outlierDetection:
      consecutive5xxErrors: 1
      interval: 1s
      baseEjectionTime: 3m
      maxEjectionPercent: 100
"""
# httpbin on its usual port (each answer 50 ms late, so three clients' calls overlap) and the
# task's client, fortio: both sidecar mode.
CIRCUIT_BREAKING_APPS = workload(
    "httpbin",
    "[python3, tests/e2e/http_backend.py, --name, httpbin, --port, $(PORT), --delay, '0.05']",
    ports="[{name: http, port: 8000}]",
) + workload("fortio", "[python3, tests/e2e/http_backend.py, --name, fortio, --port, $(PORT)]")
# A client of Bookinfo's in another namespace, and its namespace's (consumer) route for reviews.
CONSUMER_APP = workload(
    "client", "[python3, tests/e2e/http_backend.py, --name, client, --port, $(PORT)]"
).replace("metadata: {name: client}", "metadata: {name: client, namespace: consumer}")
CONSUMER_ROUTE = """\
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: reviews
  namespace: consumer
spec:
  parentRefs:
  - group: ""
    kind: Service
    name: reviews
    namespace: default
    port: 9080
  rules:
  - backendRefs:
    - name: reviews
      namespace: default
      port: 9080
    timeouts:
      request: 500ms
"""


def upstream(name: str) -> Path:
    """An upstream networking file; a missing corpus fails the test (never a skip)."""
    path = NETWORKING / name
    assert path.is_file(), f"{path} is missing: the corpus must be checked out at ../shared/"
    return path


class Bookinfo:
    """The running example: its product page, ``tulle apply`` against it, and what its sidecars
    hold."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        status = mesh.status()
        self.api = status["api"]
        replicas = {r["replica"]: r for r in status["replicas"]}
        self.admin = {name: r["admin_port"] for name, r in replicas.items()}
        self.url = f"http://{replicas['productpage-v1-0']['address']}"
        self.client = httpx.Client(timeout=30)

    def apply(self, *paths: Path) -> str:
        """``tulle apply -f PATH...`` against the mesh (the CLI in this process: a second each
        saved, ten times in the module)."""
        args = [a for path in paths for a in ("-f", str(path))]
        done = CliRunner().invoke(
            app, ["apply", *args, "--server", self.api, "--token", self.mesh.token]
        )
        assert done.exit_code == 0, (done.stdout, done.stderr)
        assert "ERROR" not in done.stderr, done.stderr
        return done.stdout

    def delete(self, kind: str, name: str) -> None:
        """``tulle delete KIND NAME`` against the mesh (the CLI in this process)."""
        args = [kind, name, "--server", self.api, "--token", self.mesh.token]
        done = CliRunner().invoke(app, ["delete", *args])
        assert done.exit_code == 0, (done.stdout, done.stderr)

    def routes(self, replica: str, host: str) -> str:
        """The routes ``replica``'s sidecar holds for ``host`` (JSON text)."""
        dump = httpx.get(f"http://127.0.0.1:{self.admin[replica]}/config_dump", timeout=10)
        found = [
            host_routes["routes"]
            for config in dump.json()["resources"]["routes"]
            for host_routes in config.get("virtualHosts", [])
            if host_routes["name"].startswith(f"{host}.default.svc.cluster.local")
        ]
        assert found, f"{replica} has no routes for {host}"
        return json.dumps(found)

    def clusters(self, replica: str, host: str) -> str:
        """The clusters ``replica``'s sidecar holds for ``host`` (JSON text)."""
        dump = httpx.get(f"http://127.0.0.1:{self.admin[replica]}/config_dump", timeout=10)
        found = [
            cluster for cluster in dump.json()["resources"]["clusters"]
            if cluster["name"].endswith(f"|{host}.default.svc.cluster.local")
        ]  # fmt: skip
        assert found, f"{replica} has no cluster for {host}"
        return json.dumps(found)

    def until_routes(
        self,
        replicas: tuple[str, ...],
        host: str,
        has: tuple[str, ...],
        lacks: tuple[str, ...] = (),
    ) -> None:
        """Wait until each of ``replicas`` routes ``host`` with all of ``has``, none of ``lacks``."""

        def held() -> bool:
            texts = [self.routes(replica, host) for replica in replicas]
            return all(
                all(n in text for n in has) and not any(n in text for n in lacks) for text in texts
            )

        wait_until(held, timeout=30, interval=0.1)

    def page(self, user: str = "", request_id: str = "") -> str:
        headers = {"cookie": f"user={user}"} if user else {}  # signed in, as `curl -b user=...`
        if request_id:
            headers["x-request-id"] = request_id
        reply = self.client.get(f"{self.url}/productpage", headers=headers)
        assert reply.status_code == 200
        assert "Book Details" in reply.text  # details answers in every task
        return reply.text

    def versions(self, count: int, user: str = "") -> collections.Counter[str]:
        """Which reviews the page showed, ``count`` pages, four at a time."""
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            return collections.Counter(pool.map(lambda _: shown(self.page(user)), range(count)))

    def access_log(self, replica: str) -> list[dict]:
        path = self.mesh.state_dir / "logs" / f"{replica}.proxy.log"
        lines = path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def tries(self, request_id: str) -> list[dict]:
        """Productpage's calls to reviews for the page of ``request_id`` (its sidecar's log)."""
        return [
            entry for entry in self.access_log("productpage-v1-0")
            if entry["request_id"] == request_id and entry["path"] == "/reviews/0"
        ]  # fmt: skip


def shown(page: str) -> str:
    """The reviews a product page shows: v1 (no stars), v2 (black), v3 (red), or what failed."""
    if REVIEWS_ERROR in page:
        return "reviews error"
    if RATINGS_UNAVAILABLE in page:
        return "ratings unavailable"
    if '<font color="red">' in page:
        return "v3"
    if '<font color="black">' in page:
        return "v2"
    return "v1"


@pytest.fixture(scope="module")
def bookinfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bookinfo]:
    assert NETWORKING.is_dir(), f"{NETWORKING} is missing: check out the corpus at ../shared/"
    root = tmp_path_factory.mktemp("bookinfo")
    (root / "circuit-breaking.yaml").write_text(CIRCUIT_BREAKING_APPS + CONSUMER_APP)
    state_dir = root / "state"
    mesh = start_mesh(state_dir, "examples/bookinfo/", str(root / "circuit-breaking.yaml"))
    example = Bookinfo(mesh)
    yield example
    example.client.close()
    tulle("down", "--state-dir", str(state_dir), check=False)
    assert_nothing_left(state_dir)


PRODUCTPAGE = ("productpage-v1-0",)
RATING_REVIEWS = ("reviews-v2-0", "reviews-v3-0")  # the versions that call ratings


def all_v1(bookinfo: Bookinfo, *then: Path) -> None:
    """Every task's first step, the destination rules and every service on v1, and ``then``
    the task's own files, in one ``tulle apply`` (a later document of the same name replaces
    an earlier one, as with ``kubectl apply``). Without ``then``, waits for all v1."""
    bookinfo.apply(
        upstream("destination-rule-all.yaml"), upstream("virtual-service-all-v1.yaml"), *then
    )
    if not then:
        bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v1|reviews.",), ("|v2|", "|v3|", "jason"))
        bookinfo.until_routes(RATING_REVIEWS, "ratings", ("|v1|ratings.",), ("http.fault",))


def test_with_no_networking_config_reviews_answers_from_each_version(bookinfo: Bookinfo):
    replicas = bookinfo.mesh.status()["replicas"]
    workloads = {(r["workload"], r["mode"], r["ready"]) for r in replicas}
    others = {(name, "sidecar", True) for name in ("httpbin", "fortio", "client")}
    assert workloads - others == {
        (name, "sidecar", True)
        for name in ("productpage-v1", "details-v1", "ratings-v1", "reviews-v1", "reviews-v2",
                     "reviews-v3")
    }  # fmt: skip
    # Three versions behind one service, no route: each gets about a third of 30 pages
    # (one of them never chosen: 3 * (2/3)^30 = 1.6e-5).
    assert set(bookinfo.versions(30)) == {"v1", "v2", "v3"}
    # The API answers as upstream's: the products, and the details and reviews of one.
    api = f"{bookinfo.url}/api/v1/products"
    assert bookinfo.client.get(api).json()[0]["title"] == "The Comedy of Errors"
    assert bookinfo.client.get(f"{api}/0").json()["ISBN-10"] == "1234567890"
    reviews = bookinfo.client.get(f"{api}/0/reviews").json()["reviews"]
    assert [r["reviewer"] for r in reviews] == ["Reviewer1", "Reviewer2"]

    # Upstream's service accounts are the identities productpage's sidecar met over mTLS.
    def peers() -> set[str]:
        log = bookinfo.access_log("productpage-v1-0")
        return {e["peer_principal"] for e in log if e["listener"] == "http_proxy"}

    wanted = {f"spiffe://cluster.local/ns/default/sa/bookinfo-{s}" for s in ("details", "reviews")}
    wait_until(lambda: peers() >= wanted, timeout=30)
    assert peers() == wanted


def test_request_routing(bookinfo: Bookinfo):
    # "Route to version 1": every page shows reviews v1, jason's too.
    all_v1(bookinfo)
    assert bookinfo.versions(20) == {"v1": 20}
    assert bookinfo.versions(5, user="jason") == {"v1": 5}
    # "Route based on user identity": jason gets v2 (black stars), everyone else v1.
    bookinfo.apply(upstream("virtual-service-reviews-test-v2.yaml"))
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v1|reviews.", "|v2|reviews.", "jason"))
    assert bookinfo.versions(10, user="jason") == {"v2": 10}
    assert bookinfo.versions(10) == {"v1": 10}
    assert bookinfo.versions(5, user="tom") == {"v1": 5}


def test_fault_injection_delay_meets_productpage_timeout(bookinfo: Bookinfo):
    all_v1(
        bookinfo,
        upstream("virtual-service-reviews-test-v2.yaml"),
        upstream("virtual-service-ratings-test-delay.yaml"),
    )
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v2|reviews.", "jason"))
    bookinfo.until_routes(RATING_REVIEWS, "ratings", ('"fixedDelay": "7s"', "jason"))
    # reviews v2 waits up to 10 s for ratings, so the 7 s delay is its answer; productpage
    # gives up after 3 s and once more after 3 s (6 s): jason's page says reviews failed.
    request_id = str(uuid.uuid4())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        jason = pool.submit(bookinfo.page, "jason", request_id)
        others = bookinfo.versions(10)  # meanwhile, everyone else's pages are as before
        page = jason.result()
    assert others == {"v1": 10}
    assert shown(page) == "reviews error"
    assert REVIEWS_SORRY in page
    # The page's two tries at reviews, both given up by productpage.
    # (A try's log line is written once its sidecar sees productpage hang up: wait for both.)
    wait_until(lambda: len(bookinfo.tries(request_id)) == 2, timeout=30)
    tries = bookinfo.tries(request_id)
    # Each ended by productpage hanging up at 3 s: no status, flag DC, as Envoy logs it.
    assert {(t["status"], t["flags"]) for t in tries} == {(0, "DC")}, tries


def test_fault_injection_abort_shows_ratings_unavailable(bookinfo: Bookinfo):
    all_v1(
        bookinfo,
        upstream("virtual-service-reviews-test-v2.yaml"),
        upstream("virtual-service-ratings-test-abort.yaml"),
    )
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v2|reviews.", "jason"))
    bookinfo.until_routes(RATING_REVIEWS, "ratings", ("abort", "jason"), ("fixedDelay",))
    request_id = str(uuid.uuid4())
    page = bookinfo.page("jason", request_id)
    assert shown(page) == "ratings unavailable"
    assert page.count(RATINGS_UNAVAILABLE) == 2  # both reviewers' ratings
    assert bookinfo.versions(10, user="jason") == {"ratings unavailable": 10}
    assert bookinfo.versions(10) == {"v1": 10}

    def calls() -> list[tuple[int, str]]:  # reviews v2's call to ratings for that page
        log = bookinfo.access_log("reviews-v2-0")
        return [
            (e["status"], e["flags"]) for e in log
            if e["request_id"] == request_id and e["listener"] == "http_proxy"
        ]  # fmt: skip

    wait_until(calls, timeout=30)
    assert calls() == [(500, "FI")]  # the abort, by reviews v2's sidecar


def test_traffic_shifting(bookinfo: Bookinfo):
    all_v1(bookinfo, upstream("virtual-service-reviews-50-v3.yaml"))
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v1|reviews.", "|v3|reviews."), ("jason",))
    bookinfo.until_routes(RATING_REVIEWS, "ratings", ("|v1|ratings.",), ("http.fault",))
    versions = bookinfo.versions(200)
    assert set(versions) == {"v1", "v3"}, versions
    # Binomial(200, 0.5): sd = sqrt(200 * 0.5 * 0.5) = 7.07 pages; 100 ± 29 is 4.1 sd.
    assert 71 <= versions["v3"] <= 129, versions
    bookinfo.apply(upstream("virtual-service-reviews-v3.yaml"))
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v3|reviews.",), ("|v1|",))
    assert bookinfo.versions(20) == {"v3": 20}


def test_request_timeouts(bookinfo: Bookinfo, tmp_path: Path):
    steps = {}
    for name, text in [("reviews-v2", REVIEWS_V2), ("ratings-delay", RATINGS_DELAY_2S),
                       ("reviews-timeout", REVIEWS_V2_TIMEOUT)]:  # fmt: skip
        steps[name] = tmp_path / f"{name}.yaml"
        steps[name].write_text(text)
    # Reviews v2 and a 2 s delay on ratings: the page still shows v2's stars, 2 s late (under
    # productpage's 3 s and reviews v2's 10 s).
    all_v1(bookinfo, steps["reviews-v2"], steps["ratings-delay"])
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v2|reviews.",), ("|v1|", "jason"))
    bookinfo.until_routes(RATING_REVIEWS, "ratings", ('"fixedDelay": "2s"',), ("jason",))
    assert shown(bookinfo.page()) == "v2"
    # A half-second timeout on reviews: the sidecar ends each of productpage's two tries at
    # 0.5 s (504, flag UT), so the page shows the reviews error at once, not 2 s later.
    bookinfo.apply(steps["reviews-timeout"])
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ('"timeout": "0.500s"', "|v2|reviews."))
    request_id = str(uuid.uuid4())
    page = bookinfo.page(request_id=request_id)
    assert shown(page) == "reviews error"
    assert REVIEWS_SORRY in page
    wait_until(lambda: len(bookinfo.tries(request_id)) == 2, timeout=30)
    tries = [(entry["status"], entry["flags"]) for entry in bookinfo.tries(request_id)]
    assert tries == [(504, "UT"), (504, "UT")]


def test_circuit_breaking(bookinfo: Bookinfo, tmp_path: Path):
    rule = tmp_path / "destination-rule-httpbin.yaml"
    rule.write_text(HTTPBIN_CIRCUIT_BREAKER)
    bookinfo.apply(rule)
    wait_until(
        lambda: '"maxConnections": 1' in bookinfo.clusters("fortio-0", "httpbin"),
        timeout=30, interval=0.1,
    )  # fmt: skip
    fortio = f"http://{bookinfo.mesh.address('fortio')}/call?url="
    get = fortio + urllib.parse.quote("http://httpbin:8000/get", safe="")

    def call() -> int:
        status: int = bookinfo.client.get(get).json()["status"]
        return status

    # One client, one call at a time: within the limits, every call passes.
    assert [call() for _ in range(5)] == [200] * 5
    # Three concurrent clients, 30 calls (fortio -c 3 -qps 0 -n 30): one connection and one
    # pending request are allowed, so some calls trip the breaker (503, flag UO in fortio's
    # sidecar's access log) and the rest pass.
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        statuses = collections.Counter(pool.map(lambda _: call(), range(30)))
    assert set(statuses) == {200, 503}, statuses

    def overflowed() -> list[dict]:
        log = bookinfo.access_log("fortio-0")
        return [e for e in log if e["path"] == "/get" and e["status"] == 503]

    # (The sidecar writes its access log in batches, as Envoy does: wait for the lines.)
    wait_until(lambda: len(overflowed()) >= statuses[503], timeout=30)
    assert len(overflowed()) == statuses[503]
    assert {entry["flags"] for entry in overflowed()} == {"UO"}
    # The breaker's 503s are the sidecar's own, not httpbin's: outlier detection
    # (consecutive5xxErrors: 1) does not eject httpbin for them, and calls pass again.
    assert [call() for _ in range(5)] == [200] * 5


def test_a_consumer_route_changes_only_its_namespace_calls(bookinfo: Bookinfo, tmp_path: Path):
    # The producer's config: reviews v2 only, ratings 2 s late (the request-timeouts task's
    # first steps). The consumer namespace's route: every version of reviews, 0.5 s at most.
    steps = {"reviews-v2": REVIEWS_V2, "ratings-delay": RATINGS_DELAY_2S, "route": CONSUMER_ROUTE}
    for name, text in steps.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    all_v1(bookinfo, *(tmp_path / f"{name}.yaml" for name in steps))
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("|v2|reviews.",), ("|v1|", "0.500s"))
    bookinfo.until_routes(RATING_REVIEWS, "ratings", ('"fixedDelay": "2s"',), ("jason",))
    bookinfo.until_routes(("client-0",), "reviews", ('"timeout": "0.500s"',), ("|v2|",))
    client = f"http://{bookinfo.mesh.address('client')}/call?url="
    reviews = client + urllib.parse.quote("http://reviews.default:9080/reviews/0", safe="")

    def call(_: int) -> str:
        answer = bookinfo.client.get(reviews).json()
        if answer["status"] != 200:
            return str(answer["status"])
        podname: str = json.loads(answer["body"])["podname"]
        return podname.rsplit("-", 2)[1]  # reviews-v1-0: v1

    # The consumer's calls: any version (the producer's v2-only route is not theirs); v1, which
    # does not call ratings, answers; v2 and v3 wait 2 s for ratings and are cut at 0.5 s (504).
    # 24 calls, six at a time: v1 never chosen has probability (2/3)^24 = 6e-5.
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        seen = collections.Counter(pool.map(call, range(24)))
    assert set(seen) == {"v1", "504"}, seen
    # Everyone else (productpage, in default) follows the producer's route, with no timeout:
    # reviews v2's stars, 2 s late.
    assert shown(bookinfo.page()) == "v2"


REGIONS = ("region1/zone1", "region2/zone2", "region3/zone3")  # reviews v1, v2, v3
REVIEWS_CLUSTER = "outbound|9080||reviews.default.svc.cluster.local"  # the service's, no subset


def test_locality_failover(bookinfo: Bookinfo):
    # The task calls the service, not a subset: every version of reviews (no VirtualService
    # for it), ratings without faults.
    all_v1(bookinfo)
    bookinfo.delete("virtualservice", "reviews")
    bookinfo.until_routes(PRODUCTPAGE, "reviews", ("outbound|9080||reviews.",), ("|v1|",))

    def reviews() -> dict:
        """Reviews' cluster in productpage's sidecar (its admin /clusters)."""
        admin = f"http://127.0.0.1:{bookinfo.admin['productpage-v1-0']}/clusters"
        clusters = httpx.get(admin, timeout=10).json()["clusters"]
        return next(c for c in clusters if c["name"] == REVIEWS_CLUSTER)

    def endpoints() -> dict[str, tuple[int, bool]]:
        """Each reviews endpoint's locality: its priority and whether it is ejected."""
        return {e["locality"]: (e["priority"], e["ejected"]) for e in reviews()["endpoints"]}

    # Without the rule (no outlier detection), localities change nothing: one priority, and
    # productpage's calls reach reviews in every region. 30 pages: a version never chosen has
    # probability 3 * (2/3)^30 = 1.6e-5.
    assert endpoints() == dict.fromkeys(REGIONS, (0, False))
    assert set(bookinfo.versions(30)) == {"v1", "v2", "v3"}

    # The task's rule: productpage's sidecar orders reviews by locality (its own zone, then the
    # failover region, region2, then region3) and every call stays in region1/zone1.
    bookinfo.apply(LOCALITY_FAILOVER)
    wait_until(
        lambda: endpoints() == {r: (p, False) for p, r in enumerate(REGIONS)}
        and all(f in bookinfo.clusters("productpage-v1-0", "reviews")
                for f in ('"consecutive5xx": 1', '"maxRequestsPerConnection": 1')),
        timeout=30, interval=0.1,
    )  # fmt: skip
    assert bookinfo.versions(20) == {"v1": 20}

    # The task drains the region1 sidecar: it refuses new connections (one per request, the
    # rule's connection pool), the first call that meets it ejects v1 (consecutive5xxErrors:
    # 1) and is retried, and every page from then on shows region2's v2. None reaches region3:
    # without `failover`, region2 and region3 would share the calls, and 20 pages with no v3
    # would have probability 2^-20 = 1e-6.
    v1 = bookinfo.mesh.replica("reviews-v1-0")
    drain = ["proxy-drain", "--admin-port", str(v1["admin_port"]),
             "--admin-token-file", v1["admin_token_file"]]  # fmt: skip
    drained = CliRunner().invoke(app, drain)
    assert drained.exit_code == 0, (drained.stdout, drained.stderr)
    assert bookinfo.versions(20) == {"v2": 20}
    assert reviews()["priority_shares"] == [0.0, 100.0, 0.0]
    assert endpoints() == {REGIONS[0]: (0, True), REGIONS[1]: (1, False), REGIONS[2]: (2, False)}

    # Restore: the drained sidecar told to quit, `tulle up` restarts reviews v1 (new ports, a
    # new endpoint, not ejected) and the calls come back to region1.
    token = Path(v1["admin_token_file"]).read_text().strip()
    quit_url = f"http://127.0.0.1:{v1['admin_port']}/quitquitquit"
    assert httpx.post(quit_url, headers={"authorization": f"Bearer {token}"}).status_code == 200

    def restarted() -> bool:
        now = bookinfo.mesh.replica("reviews-v1-0")
        return bool(now["restarts"] > v1["restarts"] and now["ready"])

    wait_until(restarted, timeout=60, interval=0.5)
    bookinfo.admin["reviews-v1-0"] = bookinfo.mesh.replica("reviews-v1-0")["admin_port"]
    wait_until(lambda: endpoints() == {r: (p, False) for p, r in enumerate(REGIONS)}, timeout=30)
    assert bookinfo.versions(10) == {"v1": 10}
