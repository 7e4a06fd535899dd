"""Who is calling the control plane's HTTP API, from the credential the request proves.

Every route but ``GET /healthz`` (and ``/metrics``) needs ``Authorization: Bearer <token>``,
or the token alone in ``X-Tulle-Token``: the Kubernetes API server's service proxy, through
which ``tulle proxy-status --kube`` reaches the control plane, removes ``Authorization`` (it
carried the user's credential for the API server) and passes other headers on. The admin token (a
0600 file in the control plane's state directory, which the ``tulle`` CLI reads itself) may do
everything. A workload's bootstrap token (the local runner makes one per replica; Kubernetes
service-account tokens later, behind the same ``Authenticator``) proves one namespace and
service account: with it a workload may register and deregister its own endpoints
and ask for its own certificate, and nothing else. A dashboard session (a browser's cookie,
:mod:`tulle.control.sessions`) may only read: ``GET`` of the admin's API. A refusal says why
(401: no or unknown credential; 403: a credential that may not do this), never echoing the
credential."""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from tulle.control.sessions import Sessions, session_of
from tulle.security.tokens import Authenticator, Unauthenticated, bearer_token
from tulle.transport.http_server import Request, Response, error_response

TOKEN_HEADER = "x-tulle-token"
"""The token alone, for callers whose ``Authorization`` a proxy removes (the API server's)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: the admin, or a workload's namespace and service account."""

    admin: bool
    namespace: str = ""
    service_account: str = ""
    viewer: bool = False  # a dashboard session: reads only

    def __str__(self) -> str:
        if self.admin:
            return "the admin"
        if self.viewer:
            return "a dashboard session"
        return f"workload ns/{self.namespace}/sa/{self.service_account}"


class AccessDenied(Exception):  # noqa: N818 (named for the outcome)
    """The request may not be served: ``status`` 401 or 403, the message says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def response(self) -> Response:
        """The refusal as the API answers it."""
        headers = {"www-authenticate": 'Bearer realm="tulle"'} if self.status == 401 else {}
        response = error_response(self.status, str(self))
        response.headers.update(headers)
        return response


class ApiAuth:
    """Turns a request's bearer token into a :class:`Caller`."""

    def __init__(
        self,
        admin_token: str,
        workloads: Authenticator | None,
        token_hint: str,
        sessions: Sessions | None = None,
    ) -> None:
        self._admin = admin_token.encode()
        self.workloads = workloads
        self.token_hint = token_hint  # where the admin token is, for the 401 message
        self.sessions = sessions  # the dashboard's browser sessions

    def caller(self, request: Request) -> Caller:
        """The caller of ``request``; raises :class:`AccessDenied` (401) without a valid one."""
        header = request.headers.get("authorization", "")
        credential = bearer_token(header)
        if not header:
            credential = request.headers.get(TOKEN_HEADER, "").strip() or None
            session = session_of(request.headers.get("cookie", ""))
            if credential is None and session is not None and self.sessions is not None:
                if self.sessions.valid(session):
                    return Caller(admin=False, viewer=True)
                raise AccessDenied(
                    401, "the dashboard session has ended; run tulle dashboard again"
                )
            if credential is None:
                raise AccessDenied(
                    401,
                    "this API needs a token: send Authorization: Bearer <token> or "
                    f"{TOKEN_HEADER}: <token> (the admin token is {self.token_hint}; the tulle "
                    "CLI reads it itself, or pass --token)",
                )
        elif credential is None:
            raise AccessDenied(401, "Authorization must be 'Bearer <token>'")
        if hmac.compare_digest(credential.encode(), self._admin):
            return Caller(admin=True)
        if self.workloads is not None:
            try:
                proven = self.workloads.authenticate(credential)
            except Unauthenticated as error:
                raise AccessDenied(401, f"token refused: {error}") from None
            return Caller(False, proven.namespace, proven.service_account)
        raise AccessDenied(401, "token refused: it is not the admin token")


def require_admin(caller: Caller, what: str, read: bool = False) -> None:
    """Raise 403 unless ``caller`` is the admin (or, when ``read``, a dashboard session)."""
    if read and caller.viewer:
        return
    if caller.viewer:
        raise AccessDenied(403, f"{caller} may only read (GET); {what} needs the admin token")
    if not caller.admin:
        raise AccessDenied(
            403,
            f"{caller} may not {what}: a workload token may only register its own endpoints "
            "and request its own certificate; this needs the admin token",
        )
