"""Local mode: ``tulle up`` runs a whole mesh on one machine — the control plane, then each
Workload's replicas as processes, each with its sidecar (or the library's settings, or bare) —
and keeps it running: readiness, registration in the service registry, restarts with backoff,
and a clean shutdown. ``tulle status``, ``logs`` and ``down`` read the state it keeps."""
