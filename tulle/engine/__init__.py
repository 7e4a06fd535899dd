"""The engine shared by the sidecar and the library: the mesh's per-request behaviour as small
layers, one module per mechanism — route matching, fault injection, rate limiting, retries (with a
budget), timeouts, circuit breaking, load balancing, outlier detection — assembled in
``outbound.py``. No sockets here: the front end hands the engine a function that sends one attempt
to one endpoint, so the same stack runs in ``tulle proxy`` and in ``tulle.client``."""
