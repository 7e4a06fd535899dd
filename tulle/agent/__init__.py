"""``tulle agent``: keeps a proxyless gRPC app's certificate files fresh.

Stock grpcio reads its workload certificate only from files (gRFC A29's ``file_watcher``
certificate provider). The agent makes the key (it never leaves the agent and the files it
writes), gets the certificate from the mesh CA with the replica's bootstrap token over the
control plane's secure xDS port, writes ``cert-chain.pem``, ``key.pem`` (0600) and
``root-cert.pem`` (Istio's names) and the token in the shape grpcio's xDS client sends
(``xds-token``, 0600), renews at half life with jitter, and keeps the last files while the CA is
away. It follows a root rotation: the control plane's ``ROOTCA`` push (``trust``) rewrites
``root-cert.pem`` at once and renews within seconds. It runs alone or runs the app as its child
(``tulle up`` runs it beside a ``mesh: proxyless`` replica's app). Layer 4, beside the sidecar
and the library: it uses ``tulle.security`` and ``tulle.xds``'s gRPC calls, and loads neither
grpcio nor the CLI.
"""

from tulle.agent.agent import (
    TOKEN_FILE,
    AgentError,
    AgentSettings,
    CertificateAgent,
    run,
)

__all__ = ["TOKEN_FILE", "AgentError", "AgentSettings", "CertificateAgent", "run"]
