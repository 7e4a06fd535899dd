"""TokenReview for tests/kube's KMock, answered as the API server answers it.

KMock has no authentication API. :class:`TokenReviews` adds a handler for ``POST
/apis/authentication.k8s.io/v1/tokenreviews`` that knows the tokens a test "issued" (as the
kubelet would get them from the TokenRequest API: a JWT with ``aud``, ``exp`` and the pod it is
bound to) and answers as kube-apiserver's service-account authenticator does: an unknown or
expired token, or one none of whose audiences is in ``spec.audiences``, is ``authenticated:
false`` with an ``error``; a good one is ``authenticated: true`` with ``user.username``
``system:serviceaccount:<ns>:<sa>``, its ``uid``, its ``groups``, ``extra`` (the pod's name and
uid, the node's name) and ``status.audiences``: the intersection of the token's and the spec's
(the spec's audiences defaulting to the API server's own, ``https://kubernetes.default.svc``).
The API server keeps no TokenReview; KMock stores every created object (an unnamed one under no
name, so the second review would be a 409), so the handler drops it again."""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from tests.kube.kmock_server import KubeApi

PATH = "post /apis/authentication.k8s.io/v1/tokenreviews"
API_SERVER_AUDIENCE = "https://kubernetes.default.svc"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


@dataclass
class _Issued:
    namespace: str
    service_account: str
    audiences: list[str]
    pod: str
    expires: float


@dataclass
class TokenReviews:
    """The tokens the fake API server knows, and the reviews it was asked for."""

    issued: dict[str, _Issued] = field(default_factory=dict)
    asked: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def install(self, api: KubeApi) -> None:
        """Answer TokenReviews on ``api`` from now on."""

        def answer(request: Any) -> dict[str, Any]:
            for (resource, _, _), stored in list(api.emulator.objects.items()):
                if resource.plural == "tokenreviews" and not stored.deleted:
                    stored.delete()
            return self.answer(request)

        async def add() -> None:
            api.emulator[PATH] << answer

        api.call(add)

    def token(
        self,
        namespace: str,
        service_account: str,
        pod: str = "",
        audiences: tuple[str, ...] = ("tulle-ca",),
        seconds: float = 3600,
    ) -> str:
        """A new token, as TokenRequest gives one to the kubelet (a JWT; the signature here is
        random bytes: only this fake API server checks it, by looking it up)."""
        expires = time.time() + seconds
        claims: dict[str, Any] = {
            "aud": list(audiences),
            "exp": int(expires),
            "iat": int(time.time()),
            "iss": API_SERVER_AUDIENCE,
            "sub": f"system:serviceaccount:{namespace}:{service_account}",
        }
        if pod:
            claims["kubernetes.io"] = {"namespace": namespace, "pod": {"name": pod}}
        token = ".".join(
            (_b64({"alg": "RS256", "kid": "k1"}), _b64(claims), secrets.token_urlsafe(32))
        )
        with self.lock:
            self.issued[token] = _Issued(namespace, service_account, list(audiences), pod, expires)
        return token

    def count(self, token: str) -> int:
        """How many reviews of ``token`` were asked for."""
        with self.lock:
            return sum(1 for spec in self.asked if spec.get("token") == token)

    def answer(self, request: Any) -> dict[str, Any]:
        """The API server's answer to one TokenReview (KMock calls it with the request)."""
        body = request.data if isinstance(request.data, dict) else {}
        spec = body.get("spec") or {}
        with self.lock:
            self.asked.append(dict(spec))
            issued = self.issued.get(str(spec.get("token", "")))
        wanted = list(spec.get("audiences") or [API_SERVER_AUDIENCE])
        status: dict[str, Any] = {"authenticated": False, "user": {}}
        if issued is None or issued.expires <= time.time():
            status["error"] = "[invalid bearer token, service account token is not valid]"
        elif not set(wanted) & set(issued.audiences):
            status["error"] = (
                f"[invalid bearer token, token audiences {json.dumps(issued.audiences)} is "
                f"invalid for the target audiences {json.dumps(wanted)}]"
            )
        else:
            extra: dict[str, list[str]] = {}
            if issued.pod:
                extra = {
                    "authentication.kubernetes.io/pod-name": [issued.pod],
                    "authentication.kubernetes.io/pod-uid": [str(uuid.uuid4())],
                    "authentication.kubernetes.io/node-name": ["node-1"],
                }
            status = {
                "authenticated": True,
                "user": {
                    "username": f"system:serviceaccount:{issued.namespace}:"
                    f"{issued.service_account}",
                    "uid": str(uuid.uuid4()),
                    "groups": [
                        "system:serviceaccounts",
                        f"system:serviceaccounts:{issued.namespace}",
                        "system:authenticated",
                    ],
                    "extra": extra,
                },
                "audiences": [a for a in wanted if a in issued.audiences],
            }
        return {
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
