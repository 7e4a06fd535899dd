"""A workload's certificate keeper wired to its ADS client, as the sidecar and the library use it.

The keeper signs through the mesh CA on the control plane's secure xDS port, with the xDS
client's bootstrap token. Two things follow the mesh's trust bundle through a root rotation:

- the roots the workload verifies the control plane with: at first the ``root-cert.pem`` it was
  started with, then the bundle of each certificate it receives (which came over a connection
  verified with the roots before). The control plane's serving certificate is signed by the new
  root once it is active, and the workload must still reach the CA and ADS then;
- the moment of renewal: the control plane pushes the bundle over ADS (Secret ``ROOTCA``) at
  each rotation step, and the keeper renews at once when it differs from the one it holds.
"""

from __future__ import annotations

import ssl

from tulle.security.material import WorkloadCredentials
from tulle.security.renewal import CertificateKeeper
from tulle.xds.client import XdsClient
from tulle.xds.grpc_stream import ca_signer


def control_plane_context(bundle_pem: bytes) -> ssl.SSLContext:
    """A client context verifying the control plane (name and chain) against ``bundle_pem``."""
    return ssl.create_default_context(cadata=bundle_pem.decode("ascii"))


def workload_certificates(xds: XdsClient) -> CertificateKeeper:
    """The keeper of a workload whose ``xds`` client has its TLS context and credential set;
    the caller runs :meth:`CertificateKeeper.run`."""
    if xds.tls is None or xds.credential is None:
        raise ValueError("a workload certificate needs the secure xDS port (TLS and a token)")
    trusted = [b""]

    def context() -> ssl.SSLContext:
        assert xds.tls is not None
        return xds.tls

    def follow(credentials: WorkloadCredentials) -> None:
        if credentials.bundle_pem != trusted[0]:
            trusted[0] = credentials.bundle_pem
            xds.tls = control_plane_context(credentials.bundle_pem)

    keeper = CertificateKeeper(ca_signer(xds.address, context, xds.credential))
    keeper.on_update(follow)
    xds.on_trust_bundle = keeper.bundle_changed
    return keeper
