"""Proxyless gRPC under zero trust, every part real: a control plane serving only its secure xDS
port, ``tulle agent`` processes keeping each app's certificate files fresh (a 10 s certificate
lifetime), ``tulle bootstrap grpc`` bootstraps, and stock grpcio at both ends — an
``xds=True`` server (``grpc.xds_server_credentials``, run by its agent as a child) and clients
on ``grpc.xds_channel_credentials``. grpcio's xDS client authenticates to the control plane with
the replica's token (gRFC A97 call credentials) over TLS (gRFC A65).

Shown: calls keep succeeding over mTLS across certificate renewals at both ends (each call on a
new connection, so the new certificates are the ones in use, past the first ones' expiry); the
server is STRICT (a plain-text client is refused) and ``tulle proxy-status`` says so; a
namespace DISABLE makes it plain text; an AuthorizationPolicy with ``principals`` admits the
client's identity and refuses another's; a proxyless client calls a STRICT sidecar workload
the same way (the sidecar counts it under the client's principal, and its RBAC refuses another
with a gRPC status); and exactly what fails without the pieces: another
replica's token (no certificate), grpcio without the call-credentials flag or with a token file
that is not a JWT (no config).

One mesh for the package (conftest.py: the control plane and the greeter under its agent),
its parts in proxyless.py; a module per feature."""
