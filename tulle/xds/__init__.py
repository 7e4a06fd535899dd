"""xDS v3 for Tulle: type URLs, node identity, the ADS session state machine (sans-IO) and its
gRPC adapter. Both the control plane (server side) and the data planes build on it."""
