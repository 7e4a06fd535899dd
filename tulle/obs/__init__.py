"""Observability shared by the sidecar and the library: Istio-style metrics (``tulle_`` prefix)
and the JSON access log, recorded from any request/response that looks like the engine's."""
