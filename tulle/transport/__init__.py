"""Transport: listeners and small servers on asyncio (the control plane's HTTP API now; TLS and
connection pools with the data plane)."""
