"""Which streams may subscribe to xDS as which node.

On the secure xDS port a node proves who it is with its bootstrap token (``authorization: Bearer
<token>`` in the call's metadata): the token's replica must be the node's pod
(``<pod>.<namespace>``), so a workload can neither read another's config nor subscribe as
another node. The plain-text port serves nobody unless the control plane was started with
``--insecure-xds`` (tests and benchmarks). Stock grpcio sends the token as call credentials
(gRFC A97 ``jwt_token_file``), wrapped by ``tulle agent`` in the JWT shape grpcio insists on
(``tulle.security.grpc_token``): the token is taken back out of it here.

With ``--registry kubernetes`` the credential may also be the pod's projected service-account
token (tulle.control.kube_identity), whose replica is the pod the API server says it is bound
to; that check may wait on the API server, so it runs in a thread, off the loop serving xDS."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Protocol

from tulle.security.grpc_token import unwrap
from tulle.security.tokens import Unauthenticated, WorkloadIdentity, bearer_token
from tulle.xds.node import NodeInfo


class ReplicaTokens(Protocol):
    """Checks a credential: the replica it proves and its identity (``BootstrapTokens``,
    ``KubernetesWorkloads``)."""

    def authenticate_replica(self, credential: str) -> tuple[str, WorkloadIdentity]: ...


class NodeAuthorizer:
    """The ADS server's ``authorize`` hook (see :data:`tulle.xds.server.Authorize`)."""

    def __init__(self, tokens: ReplicaTokens, insecure_xds: bool) -> None:
        self.tokens = tokens
        self.insecure_xds = insecure_xds

    def __call__(
        self, node: NodeInfo, metadata: Mapping[str, str], secure: bool
    ) -> str | Awaitable[str | None] | None:
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
        if getattr(self.tokens, "blocking", False):
            return asyncio.to_thread(self._check, node, credential)
        return self._check(node, credential)

    def _check(self, node: NodeInfo, credential: str) -> str | None:
        try:
            replica, identity = self.tokens.authenticate_replica(unwrap(credential))
        except Unauthenticated as error:
            return f"credential refused: {error}"
        if not replica:
            return (
                f"the token of ns/{identity.namespace}/sa/{identity.service_account} is bound to "
                f"no pod: it may not subscribe as node {node.id}"
            )
        if replica != f"{node.pod}.{node.namespace}":
            return (
                f"the token of replica {replica} (ns/{identity.namespace}/sa/"
                f"{identity.service_account}) may not subscribe as node {node.id}"
            )
        return None
