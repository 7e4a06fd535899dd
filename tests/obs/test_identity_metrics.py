"""Identity in the request metrics (issue 17): Istio's ``source_principal``,
``destination_principal`` and ``connection_security_policy`` labels on both reporters; the
callee's ``source_workload`` from the caller's certificate over mTLS, never from the header a
client writes; the certificate's expiry gauge; outbound mTLS failures by cause."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tulle.engine.message import Request, Response, finished
from tulle.obs.metrics import (
    LABELS,
    SOURCE_WORKLOAD_HEADER,
    MeshMetrics,
    upstream_tls_cause,
    workload_of,
)

FRONTEND = "spiffe://cluster.local/ns/default/sa/frontend"
PAYMENT = "spiffe://cluster.local/ns/default/sa/payment"
NOT_AFTER = 1_900_000_000.0


def series(metrics: MeshMetrics, name: str = "tulle_requests_total") -> dict[tuple, float]:
    """Each sample of ``name`` by its labels (as sorted pairs)."""
    found = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**values: str) -> tuple:
    return tuple(sorted(values.items()))


def payment_metrics() -> MeshMetrics:
    metrics = MeshMetrics("payment")
    metrics.use_certificate(lambda: (PAYMENT, NOT_AFTER))
    return metrics


def served(principal: str | None, claimed: str | None = None) -> Request:
    headers = [(SOURCE_WORKLOAD_HEADER, claimed)] if claimed else []
    return Request("GET", "/pay", "payment:8080", headers, peer_principal=principal)


def test_every_request_series_has_istios_identity_labels():
    metrics = payment_metrics()
    metrics.record(finished("inbound", served(FRONTEND), Response(200, []), 1.0, 1.001, 2, "pay"))
    ((found, _),) = series(metrics).items()
    assert sorted(name for name, _ in found) == sorted(LABELS)


def test_a_caller_over_mtls_is_who_its_certificate_says_whatever_header_it_forged():
    metrics = payment_metrics()
    for claimed in ("admin", None, "payment"):  # the forgery changes nothing
        request = served(FRONTEND, claimed)
        metrics.record(finished("inbound", request, Response(200, []), 1.0, 1.001, 2, "pay"))
    assert series(metrics) == {
        labels(reporter="destination", source_workload="frontend", source_principal=FRONTEND,
               destination_service="pay", destination_workload="payment",
               destination_principal=PAYMENT, response_code="200", response_flags="-",
               connection_security_policy="mutual_tls"): 3.0,
    }  # fmt: skip


def test_a_plain_text_caller_is_what_its_header_claims_and_labelled_unproven():
    metrics = payment_metrics()
    for claimed in ("frontend", None):
        request = served(None, claimed)
        metrics.record(finished("inbound", request, Response(200, []), 1.0, 1.001, 2, "pay"))
    common = {"reporter": "destination", "source_principal": "unknown",
              "destination_service": "pay", "destination_workload": "payment",
              "destination_principal": "unknown", "response_code": "200",
              "response_flags": "-", "connection_security_policy": "none"}  # fmt: skip
    assert series(metrics) == {
        labels(**common, source_workload="frontend"): 1.0,
        labels(**common, source_workload="unknown"): 1.0,
    }


def test_the_caller_labels_both_ends_of_an_mtls_request_and_leaves_the_policy_unknown():
    metrics = MeshMetrics("frontend")
    metrics.use_certificate(lambda: (FRONTEND, NOT_AFTER))
    cluster = "outbound|8080||payment.default.svc.cluster.local"
    over_mtls = Response(200, [], cluster=cluster, upstream_workload="payment",
                         upstream_principal=PAYMENT)  # fmt: skip
    plain = Response(200, [], cluster=cluster, upstream_workload="payment")
    request = Request("GET", "/pay", "payment:8080", [])
    for response in (over_mtls, over_mtls, plain):
        metrics.record(finished("outbound", request, response, 1.0, 1.001, 2))
    common = {"reporter": "source", "source_workload": "frontend",
              "destination_service": "payment.default.svc.cluster.local",
              "destination_workload": "payment", "response_code": "200",
              "response_flags": "-", "connection_security_policy": "unknown"}  # fmt: skip
    assert series(metrics) == {
        labels(**common, source_principal=FRONTEND, destination_principal=PAYMENT): 2.0,
        labels(**common, source_principal="unknown", destination_principal="unknown"): 1.0,
    }


def test_the_workload_of_a_spiffe_id_is_its_service_account():
    assert workload_of(FRONTEND) == "frontend"
    assert workload_of("spiffe://example.org/ns/shop/sa/catalog") == "catalog"
    assert workload_of("spiffe://example.org/workload/catalog") == "unknown"
    assert workload_of("spiffe://example.org/ns/shop/sa/") == "unknown"


def test_the_certificate_expiry_is_a_timestamp_gauge_once_there_is_a_certificate():
    metrics = MeshMetrics("payment")
    current: list[tuple[str, float]] = []
    metrics.use_certificate(lambda: current[0] if current else None)
    gauge = "tulle_workload_certificate_expiration_timestamp_seconds"
    assert series(metrics, gauge) == {}
    current.append((PAYMENT, NOT_AFTER))
    assert series(metrics, gauge) == {labels(workload="payment", principal=PAYMENT): NOT_AFTER}


def test_outbound_mtls_failures_are_counted_by_cause():
    metrics = MeshMetrics("frontend")
    for reason in (
        "mTLS: certificate verify failed: unable to get local issuer certificate",
        "mTLS: alert from peer: unknown ca",
        f"mTLS: upstream peer identity {FRONTEND} is not one of [{PAYMENT}]",
        "mTLS: peer identity spiffe://other.org/ns/default/sa/x is not in trust domain "
        "cluster.local",
        "no valid workload certificate (expired 2026-12-06T01:00:00+00:00)",
        "timed out after 1s (mTLS)",
        "refused",  # a TCP refusal is not a TLS failure
    ):
        metrics.upstream_tls_failed(reason)
    assert series(metrics, "tulle_upstream_tls_failures_total") == {
        labels(reason="handshake_failed"): 2.0,
        labels(reason="peer_identity"): 2.0,
        labels(reason="no_certificate"): 1.0,
        labels(reason="timeout"): 1.0,
    }
    assert upstream_tls_cause("refused") is None
