"""Hypothesis round-trips: a generated resource, dumped to YAML and loaded again, is the same
resource and normalizes to the same mesh model. Values are drawn to hit YAML's traps (strings
that look like numbers, booleans or null; unicode; odd spacing)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tulle.api import build_model, validate_documents, validate_text
from tulle.api.source import Document

names = st.from_regex(r"\A[a-z]([a-z0-9-]{0,10}[a-z0-9])?\Z")
tricky_text = st.one_of(
    st.sampled_from(["yes", "no", "on", "off", "null", "~", "1.0", "0x1F", "1e3", "", " x ", "#"]),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12),
)
header_names = st.from_regex(r"\Ax-[a-z]{1,8}\Z")
durations = st.builds(
    lambda n, unit: f"{n}{unit}", st.integers(1, 5000), st.sampled_from(["ms", "s", "m", "h"])
)
percent = st.builds(lambda v: {"value": v}, st.floats(0, 100, allow_nan=False))
labels = st.dictionaries(names, names, max_size=3)
# Label values Kubernetes accepts that YAML would read as something else unless quoted.
label_values = st.one_of(
    st.sampled_from(["yes", "no", "on", "off", "null", "1.0", "0x1F", "1e3", "", "007"]),
    st.from_regex(r"\A[A-Za-z0-9]([-A-Za-z0-9_.]{0,10}[A-Za-z0-9])?\Z"),
)


def string_match(allow_empty: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    choices = [
        st.builds(lambda v: {"exact": v}, tricky_text),
        st.builds(lambda v: {"prefix": "/" + v}, tricky_text),
        st.builds(lambda v: {"regex": v}, st.sampled_from(["^/a.*", "[0-9]+", "(x|y)?z"])),
    ]
    if allow_empty:
        choices.append(st.just({}))
    return st.one_of(*choices)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


def drop_none(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if v is not None and v not in ({}, [])}


@st.composite
def http_match(draw: st.DrawFn) -> dict[str, Any]:
    return drop_none(
        {
            "uri": draw(optional(string_match())),
            "method": draw(
                optional(st.builds(lambda m: {"exact": m}, st.sampled_from(["GET", "POST"])))
            ),
            "headers": draw(st.dictionaries(header_names, string_match(True), max_size=2)),
            "withoutHeaders": draw(st.dictionaries(header_names, string_match(True), max_size=1)),
            "queryParams": draw(st.dictionaries(names, string_match(), max_size=2)),
            "port": draw(optional(st.integers(1, 65535))),
            "sourceLabels": draw(labels),
            "ignoreUriCase": draw(optional(st.booleans())),
        }
    )


@st.composite
def http_route(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 3))
    weights = [100] if count == 1 else [draw(st.integers(0, 100)) for _ in range(count - 1)]
    if count > 1:
        if sum(weights) > 100:
            weights = [100 // count] * (count - 1)
        weights.append(100 - sum(weights))
    destinations = [
        {
            "destination": {"host": "reviews"},
            "weight": weight,
            "headers": {
                "request": {"set": draw(st.dictionaries(header_names, tricky_text, max_size=2))}
            },
        }
        for weight in weights
    ]
    fault = draw(
        optional(
            st.builds(
                lambda d, p, s: {
                    "delay": {"fixedDelay": d, "percentage": p},
                    "abort": {"httpStatus": s},
                },
                durations,
                percent,
                st.integers(200, 599),
            )
        )
    )
    return drop_none(
        {
            "name": draw(optional(names)),
            "match": draw(st.lists(http_match(), max_size=2)),
            "route": destinations,
            "timeout": draw(optional(durations)),
            "retries": draw(
                optional(
                    st.builds(
                        lambda a, t, on: drop_none(
                            {"attempts": a, "perTryTimeout": t, "retryOn": on}
                        ),
                        st.integers(0, 5),
                        optional(durations),
                        optional(
                            st.sampled_from(["5xx", "gateway-error,503", "reset,connect-failure"])
                        ),
                    )
                )
            ),
            "fault": fault,
            "mirrorPercentage": draw(optional(percent)),
            "headers": draw(
                optional(
                    st.builds(
                        lambda s, r: {"response": {"set": s, "remove": r}},
                        st.dictionaries(header_names, tricky_text, max_size=2),
                        st.lists(header_names, max_size=2),
                    )
                )
            ),
        }
    )


def resource(kind: str, api: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name}, "spec": spec}


virtual_services = st.builds(
    lambda routes, name: resource(
        "VirtualService",
        "networking.istio.io/v1",
        {"hosts": ["reviews"], "http": routes},
        name,
    ),
    st.lists(http_route(), min_size=1, max_size=3),
    names,
)

traffic_policies = st.builds(
    lambda lb, pool, od: drop_none(
        {"loadBalancer": lb, "connectionPool": pool, "outlierDetection": od}
    ),
    optional(
        st.one_of(
            st.builds(
                lambda s: {"simple": s}, st.sampled_from(["ROUND_ROBIN", "LEAST_REQUEST", "RANDOM"])
            ),
            st.builds(lambda h: {"consistentHash": {"httpHeaderName": h}}, header_names),
            st.builds(
                lambda c: {"consistentHash": {"httpCookie": {"name": c, "ttl": "10s"}}}, names
            ),
        )
    ),
    optional(
        st.builds(
            lambda m, t, p: {
                "tcp": {"maxConnections": m, "connectTimeout": t},
                "http": {"http1MaxPendingRequests": p},
            },
            st.integers(1, 10000),
            durations,
            st.integers(1, 1000),
        )
    ),
    optional(
        st.builds(
            lambda c, i, e: {"consecutive5xxErrors": c, "interval": i, "maxEjectionPercent": e},
            st.integers(0, 20),
            durations,
            st.integers(0, 100),
        )
    ),
)

destination_rules = st.builds(
    lambda policy, subsets, name: resource(
        "DestinationRule",
        "networking.istio.io/v1beta1",
        drop_none(
            {
                "host": "reviews",
                "trafficPolicy": policy,
                "subsets": [
                    {"name": f"s{i}", "labels": {"version": v}} for i, v in enumerate(subsets)
                ],
            }
        ),
        name,
    ),
    traffic_policies,
    st.lists(label_values, max_size=3),
    names,
)

workloads = st.builds(
    lambda command, env, replicas, lab, mesh, name: resource(
        "Workload",
        "tulle.dev/v1alpha1",
        {
            "service": "reviews",
            "command": command,
            "env": env,
            "replicas": replicas,
            "labels": lab,
            "mesh": mesh,
            "ports": [{"name": "http", "port": 9080}],
        },
        name,
    ),
    st.lists(tricky_text, min_size=1, max_size=3),
    st.dictionaries(st.from_regex(r"\A[A-Z_]{1,8}\Z"), tricky_text, max_size=3),
    st.integers(0, 5),
    labels,
    st.sampled_from(["sidecar", "library", "proxyless", "none"]),
    names,
)

authorization_policies = st.builds(
    lambda action, paths, ports, values, name: resource(
        "AuthorizationPolicy",
        "security.istio.io/v1",
        {
            "action": action,
            "rules": [
                {
                    "to": [{"operation": {"paths": paths, "ports": ports}}],
                    "when": [{"key": "request.headers[x-tenant]", "values": values}],
                }
            ],
        },
        name,
    ),
    st.sampled_from(["ALLOW", "DENY", "AUDIT"]),
    st.lists(tricky_text, max_size=3),
    st.lists(st.integers(1, 65535).map(str), max_size=2),
    st.lists(tricky_text, min_size=1, max_size=3),
    names,
)

resources = st.one_of(virtual_services, destination_rules, workloads, authorization_policies)


KNOWN = ["reviews.default.svc.cluster.local"]


def load_data(data: dict[str, Any]):
    result = validate_documents(
        [Document(file="<generated>", line=1, data=data)], known_hosts=KNOWN
    )
    assert [f.format() for f in result.findings if f.severity.value == "ERROR"] == []
    (item,) = result.loaded
    return item.resource


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(resources)
def test_yaml_round_trip_gives_the_same_resource_and_model(data):
    original = load_data(data)
    dumped = yaml.safe_dump(
        original.model_dump(mode="json", by_alias=True, exclude_none=True), allow_unicode=True
    )
    result = validate_text(dumped, "<dumped>", known_hosts=KNOWN)
    errors = [f.format() for f in result.findings if f.severity.value == "ERROR"]
    assert errors == [], dumped
    (reloaded,) = result.resources
    assert reloaded == original
    assert build_model([reloaded]) == build_model([original])


@settings(max_examples=100, deadline=None)
@given(st.lists(resources, min_size=1, max_size=4, unique_by=lambda d: d["kind"]))
def test_raw_data_and_its_yaml_normalize_alike(documents):
    text = yaml.safe_dump_all(documents, allow_unicode=True)
    from_yaml = validate_text(text, "<all>", known_hosts=KNOWN)
    from_data = validate_documents(
        [Document(file="<data>", line=1, data=d) for d in documents], known_hosts=KNOWN
    )
    assert sorted(f.message for f in from_yaml.findings) == sorted(
        f.message for f in from_data.findings
    )
    assert from_yaml.resources == from_data.resources
    assert build_model(from_yaml.resources) == build_model(from_data.resources)
