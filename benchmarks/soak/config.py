"""The mesh the soak runs: the shop (``examples/shop/``) as it is, but with its deliberate
failures turned off so that every failed request is the soak's doing — payment neither fails
(20 % of calls in the demo) nor hangs (5 %), and cart's RateLimit (50 requests/s in the demo)
is raised past the soak's rate. Written as a copy into the soak's own directory; the shop's
files are not touched. Also the two VirtualServices for catalog the config churn alternates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).parent.parent.parent
SHOP = REPO / "examples" / "shop"
CART_LIMIT = 100_000  # requests a second: never reached


def _soaked(document: dict[str, Any]) -> dict[str, Any]:
    kind, name = document.get("kind"), document.get("metadata", {}).get("name")
    if kind == "Workload" and name == "payment":
        document["spec"]["env"] = {"FAILURE_RATE": "0", "HANG_RATE": "0"}
    if kind == "RateLimit" and name == "cart-inbound":
        document["spec"]["limit"] = {"requests": CART_LIMIT, "unit": "second",
                                     "burst": CART_LIMIT}  # fmt: skip
    return document


def write_config(directory: Path) -> Path:
    """The shop's config, soaked, in ``directory`` (created); the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    for source in sorted(SHOP.glob("*.yaml")):
        documents = [_soaked(d) for d in yaml.safe_load_all(source.read_text()) if d]
        (directory / source.name).write_text(yaml.safe_dump_all(documents, sort_keys=False))
    return directory


def catalog_split(v1: int) -> str:
    """The shop's VirtualService for catalog with ``v1`` % to v1 and the rest to v2 (the testers'
    header route and the retries as in examples/shop/traffic.yaml)."""
    return f"""\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: catalog
spec:
  hosts: [catalog]
  http:
    - name: testers
      match:
        - headers:
            x-canary: {{exact: "true"}}
      route:
        - destination: {{host: catalog, subset: v2}}
    - name: canary
      route:
        - destination: {{host: catalog, subset: v1}}
          weight: {v1}
        - destination: {{host: catalog, subset: v2}}
          weight: {100 - v1}
      timeout: 2s
      retries:
        attempts: 2
        perTryTimeout: 500ms
        retryOn: 5xx,connect-failure
"""
