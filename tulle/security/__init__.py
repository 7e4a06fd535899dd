"""Security: workload identity and the mesh's certificate authority, without sockets or asyncio.

SPIFFE IDs (``spiffe``); workload keys and CSRs and the checks on them (``keys``); the CA, self-
managed with root rotation or the user's own (``ca``); peer identity and chain checks (``verify``);
credentials that prove an identity to the CA, and the admin token (``tokens``); when to renew and
how to retry (``rotation``); a workload's credentials as ``ssl`` contexts and grpcio files
(``material``). The control plane, the sidecar, the library and the local runner carry the bytes;
this package decides what they mean.
"""

from tulle.security.ca import CaError, CertificateAuthority, IssuedCertificate
from tulle.security.keys import (
    CsrRefused,
    make_csr,
    new_private_key,
    private_key_pem,
    read_csr,
    requested_identities,
)
from tulle.security.material import WorkloadCredentials
from tulle.security.rotation import RetrySchedule, renewal_time
from tulle.security.spiffe import SpiffeId, check_trust_domain, control_plane_identity
from tulle.security.tokens import (
    Authenticator,
    BootstrapTokens,
    TokenFileError,
    Unauthenticated,
    WorkloadIdentity,
    admin_token,
    read_token_file,
)
from tulle.security.verify import (
    PeerRefused,
    check_peer,
    peer_identity_from_der,
    peer_identity_from_getpeercert,
    verify_chain,
)

__all__ = [
    "Authenticator",
    "BootstrapTokens",
    "CaError",
    "CertificateAuthority",
    "CsrRefused",
    "IssuedCertificate",
    "PeerRefused",
    "RetrySchedule",
    "SpiffeId",
    "TokenFileError",
    "Unauthenticated",
    "WorkloadCredentials",
    "WorkloadIdentity",
    "admin_token",
    "check_peer",
    "check_trust_domain",
    "control_plane_identity",
    "make_csr",
    "new_private_key",
    "peer_identity_from_der",
    "peer_identity_from_getpeercert",
    "private_key_pem",
    "read_csr",
    "read_token_file",
    "renewal_time",
    "requested_identities",
    "verify_chain",
]
