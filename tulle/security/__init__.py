"""Security: workload identity and the mesh's certificate authority, without sockets or asyncio.

SPIFFE IDs (``spiffe``); workload keys and CSRs and the checks on them (``keys``); the CA, self-
managed with root rotation or the user's own (``ca``); peer identity and chain checks (``verify``);
credentials that prove an identity to the CA, and the admin token (``tokens``); when to renew and
how to retry (``rotation``); a workload's credentials as ``ssl`` contexts and grpcio files
(``material``). The control plane, the sidecar, the library and the local runner carry the bytes;
this package decides what they mean.

The workload side (``renewal``, ``material``, ``verify``, ``workload_pki``, ``libcrypto``) never
imports ``cryptography``, whose own OpenSSL would cost each sidecar about 12 MB; the CA side
(``ca``, ``certificates``, ``keys``, ``chain``, ``rootstore``) uses it. So the names below are
loaded on first use, not when the package is: ``import tulle.security.renewal`` does not load the
CA. (An import-linter contract in ``pyproject.toml`` keeps the workload side clean.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tulle.security.ca import (
        CaError,
        CertificateAuthority,
        IssuedCertificate,
    )
    from tulle.security.chain import (
        verify_chain,
    )
    from tulle.security.keys import (
        CsrRefused,
        make_csr,
        new_private_key,
        private_key_pem,
        read_csr,
        requested_identities,
    )
    from tulle.security.material import (
        WorkloadCredentials,
    )
    from tulle.security.rotation import (
        RetrySchedule,
        renewal_time,
    )
    from tulle.security.spiffe import (
        SpiffeId,
        check_trust_domain,
        control_plane_identity,
    )
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
    )

_MODULES = {
    "CaError": "tulle.security.ca",
    "CertificateAuthority": "tulle.security.ca",
    "IssuedCertificate": "tulle.security.ca",
    "CsrRefused": "tulle.security.keys",
    "make_csr": "tulle.security.keys",
    "new_private_key": "tulle.security.keys",
    "private_key_pem": "tulle.security.keys",
    "read_csr": "tulle.security.keys",
    "requested_identities": "tulle.security.keys",
    "WorkloadCredentials": "tulle.security.material",
    "RetrySchedule": "tulle.security.rotation",
    "renewal_time": "tulle.security.rotation",
    "SpiffeId": "tulle.security.spiffe",
    "check_trust_domain": "tulle.security.spiffe",
    "control_plane_identity": "tulle.security.spiffe",
    "Authenticator": "tulle.security.tokens",
    "BootstrapTokens": "tulle.security.tokens",
    "TokenFileError": "tulle.security.tokens",
    "Unauthenticated": "tulle.security.tokens",
    "WorkloadIdentity": "tulle.security.tokens",
    "admin_token": "tulle.security.tokens",
    "read_token_file": "tulle.security.tokens",
    "PeerRefused": "tulle.security.verify",
    "check_peer": "tulle.security.verify",
    "peer_identity_from_der": "tulle.security.verify",
    "peer_identity_from_getpeercert": "tulle.security.verify",
    "verify_chain": "tulle.security.chain",
}

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


def __getattr__(name: str) -> Any:
    """The exported ``name``, imported from its module on first use."""
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
