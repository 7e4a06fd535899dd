"""Valid mesh models drawn from fuzz input: the valid config corpus (tests/api/corpus/valid) as
plain data, some of its documents left out, then a few mutations, each drawn: a value replaced
by another seen under the same key anywhere in the corpus (a graft: a whole trafficPolicy, a
match, a port), a scalar replaced by another of its type (from the corpus or a list of edge
values), a key removed or added (one seen beside its siblings), a list item removed or
doubled, a resource copied under another name. What does not validate is set aside by the
target; what does is a model no test wrote by hand. Endpoints for the registry are drawn too."""

from __future__ import annotations

import copy
import pickle
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fuzz.support.draw import Draw
from tulle.api.model import MeshModel
from tulle.api.source import Document, read_paths
from tulle.control.registry import Endpoint

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "api" / "corpus" / "valid"
EDGE_VALUES: dict[type, tuple[Any, ...]] = {
    int: (0, 1, -1, 2, 100, 101, 65535, 65536, 2**31 - 1, 2**32),
    float: (0.0, 0.5, 50.0, 99.999, 100.0, 100.5, -1.0, 1e-9),
    str: ("", "*", "a", "0s", "1ms", "1h", "/", "x-a", "default", "shop", "v1", "^.*$", "[",
          "reviews", "reviews.shop.svc.cluster.local", "*.example.com", "127.0.0.1", "::1",
          "HTTP", "GRPC", "TCP", "UNAVAILABLE", "local/zone-a", "a b", "é"),
    bool: (True, False),
}  # fmt: skip
ADDRESSES = ("127.0.0.1", "10.0.0.7", "::1", "fe80::1", "192.0.2.1")
LOCALITIES = ("", "local", "local/zone-a", "local/zone-a/rack-1", "other/zone-b")


@dataclass
class Pools:
    """What the corpus holds, for mutations to draw from."""

    documents: list[Document]
    pickled: list[bytes] = field(default_factory=list)  # each document's data, to copy
    by_key: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    keys_under: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    scalars: dict[type, list[Any]] = field(default_factory=lambda: defaultdict(list))


def _walk(value: Any, parent: str, pools: Pools) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            pools.keys_under[parent].add(str(key))
            pools.by_key[str(key)].append(item)
            _walk(item, str(key), pools)
    elif isinstance(value, list):
        for item in value:
            _walk(item, parent, pools)
    elif type(value) in EDGE_VALUES:
        pools.scalars[type(value)].append(value)


def load_pools() -> Pools:
    """The corpus, read once."""
    documents, findings = read_paths([CORPUS])
    assert not findings, findings
    pools = Pools(documents, [pickle.dumps(d.data) for d in documents])
    for document in documents:
        _walk(document.data, "", pools)
    return pools


def _places(value: Any) -> Iterator[tuple[Any, Any, str]]:
    """Every (container, key, key name) below ``value``, depth first."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, key, str(key)
            yield from _places(item)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield value, index, ""
            yield from _places(item)


def _scalar_like(draw: Draw, value: Any, pools: Pools) -> Any:
    kind = type(value)
    seen = pools.scalars.get(kind, [])
    options = EDGE_VALUES[kind]
    if seen and draw.flag():
        return draw.pick(seen)
    return draw.pick(options)


def mutate(draw: Draw, data: Any, pools: Pools) -> None:
    """One drawn change somewhere in ``data`` (a document's data)."""
    places = list(_places(data))
    if not places:
        return
    container, key, name = places[draw.below(len(places))]
    value = container[key]
    operation = draw.below(6)
    if operation == 0 and name and pools.by_key.get(name):
        container[key] = copy.deepcopy(draw.pick(pools.by_key[name]))
    elif operation == 1 and type(value) in EDGE_VALUES:
        container[key] = _scalar_like(draw, value, pools)
    elif operation == 2:
        del container[key]
    elif operation == 3 and isinstance(container, list):
        container.insert(key, copy.deepcopy(value))
    elif operation == 4 and isinstance(value, dict):
        known = sorted(pools.keys_under.get(name, set()) - set(value))
        if known:
            added = draw.pick(known)
            value[added] = copy.deepcopy(draw.pick(pools.by_key[added]))
    elif operation == 5 and isinstance(value, dict | list) and value:
        mutate(draw, value, pools)  # deeper into the same place


def documents(draw: Draw, pools: Pools) -> list[Document]:
    """Some of the corpus's documents, mutated."""
    # Each document kept unless its byte says 7 (mod 8): an input of zeros is the corpus.
    # (Copied by unpickling: several times faster than deepcopy, for plain data.)
    chosen = [pickle.loads(kept) for kept in pools.pickled if draw.below(8) != 7]
    if chosen and draw.below(4) == 3:  # a resource copied under another name
        twin = copy.deepcopy(draw.pick(chosen))
        if isinstance(twin.get("metadata"), dict):
            twin["metadata"]["name"] = f"{twin['metadata'].get('name', 'x')}-copy"
        chosen.append(twin)
    for _ in range(draw.below(5)):
        if chosen:
            mutate(draw, draw.pick(chosen), pools)
    return [Document("fuzz.yaml", index + 1, data) for index, data in enumerate(chosen)]


def endpoints(draw: Draw, model: MeshModel) -> tuple[Endpoint, ...]:
    """Registered endpoints for some of the model's services, with labels its subsets and
    workloads select."""
    labels: list[tuple[tuple[str, str], ...]] = [()]
    labels += [w.labels for w in model.workloads]
    for policy in model.destination_policies.values():
        labels += [s.labels for s in policy.subsets]
    found = []
    for service in model.services.values():
        for _ in range(draw.below(3)):
            port = draw.pick(service.ports) if service.ports else None
            found.append(
                Endpoint(
                    service=service.host,
                    address=draw.pick(ADDRESSES),
                    port=draw.pick((8080, 9080, 50051, 1, 65535)),
                    service_port=draw.pick((None, port.number)) if port else None,
                    protocol=port.protocol if port else "HTTP",
                    labels=draw.pick(labels),
                    locality=draw.pick(LOCALITIES),
                    healthy=not draw.chance(4),
                    workload=draw.pick(("", "reviews-v1")),
                )
            )
    return tuple(found)
