"""Which streams may subscribe to xDS as which node.

On the secure xDS port a node proves who it is with its bootstrap token (``authorization: Bearer
<token>`` in the call's metadata): the token's replica must be the node's pod
(``<pod>.<namespace>``), so a workload can neither read another's config nor subscribe as
another node. The plain-text port serves nobody unless the control plane was started with
``--insecure-xds`` (tests and benchmarks). Stock grpcio sends the token as call credentials
(gRFC A97 ``jwt_token_file``), wrapped by ``tulle agent`` in the JWT shape grpcio insists on
(``tulle.security.grpc_token``): the token is taken back out of it here."""

from __future__ import annotations

from collections.abc import Mapping

from tulle.security.grpc_token import unwrap
from tulle.security.tokens import BootstrapTokens, Unauthenticated, bearer_token
from tulle.xds.node import NodeInfo


class NodeAuthorizer:
    """The ADS server's ``authorize`` hook (see :data:`tulle.xds.server.Authorize`)."""

    def __init__(self, tokens: BootstrapTokens, insecure_xds: bool) -> None:
        self.tokens = tokens
        self.insecure_xds = insecure_xds

    def __call__(self, node: NodeInfo, metadata: Mapping[str, str], secure: bool) -> str | None:
        if not secure:
            if self.insecure_xds:
                return None
            return (
                "plain-text xDS is off: connect to the secure xDS port with a bootstrap token "
                "(or start the control plane with --insecure-xds)"
            )
        credential = bearer_token(metadata.get("authorization", ""))
        if credential is None:
            return "no credential: send 'authorization: Bearer <bootstrap token>' with the stream"
        try:
            replica, identity = self.tokens.authenticate_replica(unwrap(credential))
        except Unauthenticated as error:
            return f"credential refused: {error}"
        if replica != f"{node.pod}.{node.namespace}":
            return (
                f"the token of replica {replica} (ns/{identity.namespace}/sa/"
                f"{identity.service_account}) may not subscribe as node {node.id}"
            )
        return None
