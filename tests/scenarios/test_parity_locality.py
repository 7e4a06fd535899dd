"""Locality failover as the istio.io "Locality failover" task shows it, in every mode (sidecar,
library, proxyless gRPC): a caller in region1/zone1, backends in region1/zone1, region2/zone2
and region3/zone3, a DestinationRule with outlier detection and ``failover: region1 ->
region2``. Calls stay in region1/zone1; once that backend fails (its process is gone, as the
task drains its sidecar) it is ejected and the calls go to the failover region, region2, never
to region3. grpcio follows the EDS priorities with its own priority policy (gRFC A37): it
moves on when the backend's connection fails, with no ejection."""

from __future__ import annotations

import collections
from collections.abc import Callable

from tests.e2e.conftest import ControlPlane, Processes, wait_until
from tests.manifests import destination_rule, virtual_service
from tests.scenarios.conftest import Caller, Serve, get_all

WEB = "http://web:8080"
CALLER = """\
apiVersion: tulle.dev/v1alpha1
kind: Workload
metadata: {name: caller}
spec:
  command: [caller]
  locality: region1/zone1
---
"""
# The task's DestinationRule (its connection pool aside: a new connection per request is how
# the task makes the drained sidecar refuse the very next call).
FAILOVER = (
    "{loadBalancer: {simple: ROUND_ROBIN, localityLbSetting: {enabled: true, "
    "failover: [{from: region1, to: region2}]}}, "
    "outlierDetection: {consecutive5xxErrors: 1, interval: 1s, baseEjectionTime: 1m}}"
)


def test_locality_failover_goes_to_the_failover_region(
    control_plane: ControlPlane,
    processes: Processes,
    serve: Serve,
    caller_for: Callable[[], Caller],
    mode: str,
) -> None:
    serve(local={"locality": "region1/zone1"})
    local = processes.started[-1]
    serve(far={"locality": "region2/zone2"}, farther={"locality": "region3/zone3"})
    control_plane.apply(
        CALLER
        + virtual_service("    - route: [{destination: {host: web}}]\n      retries: {attempts: 0}")
        + destination_rule(FAILOVER)
    )
    caller: Caller = caller_for()
    assert {o.backend for o in get_all(caller, f"{WEB}/", 20)} == {"local"}
    local.kill()
    local.wait()

    def failed_over() -> bool:
        return caller.get(f"{WEB}/", timeout=5).backend == "far"

    wait_until(failed_over, timeout=30)
    after = collections.Counter(o.backend for o in get_all(caller, f"{WEB}/", 20))
    assert after == {"far": 20}
