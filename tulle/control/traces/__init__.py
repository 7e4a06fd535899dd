"""The control plane's built-in trace store: OTLP spans in (HTTP ``POST /v1/traces`` and the
gRPC TraceService, from authenticated workloads), the last N spans kept in memory (whole traces
evicted, oldest first), and the query API the CLI (``tulle traces``) and the dashboard read
(``GET /api/v1/traces``, ``GET /api/v1/traces/{traceId}``). docs/observability.md says how."""
