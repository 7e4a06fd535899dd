"""The control plane: ingest config and service discovery, translate them into xDS per node, serve
them over ADS, and report each node's status. Ingest → snapshot → translate → serve."""
