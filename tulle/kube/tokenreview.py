"""A workload's projected service-account token, checked by the API server (TokenReview).

The injector mounts each sidecar a token the kubelet requests for the audience ``tulle-ca``
(tulle/inject). The control plane sends it to ``authentication.k8s.io/v1`` TokenReview with
``spec.audiences: [tulle-ca]`` and believes only what the API server answers: ``authenticated:
true``, ``tulle-ca`` among ``status.audiences`` (an API server that ignored the audience would
not name it: Kubernetes' own advice to TokenReview clients), and a user name
``system:serviceaccount:<namespace>:<name>``. The pod the token is bound to (the kubelet's
tokens are) comes from ``user.extra["authentication.kubernetes.io/pod-name"]``.

A positive answer is kept for a short while (at most ``CACHE_SECONDS``, never past the token's
own ``exp``), so an xDS stream and the certificate requests of one sidecar cost one TokenReview
a minute, not one per call; the cache is bounded (``MAX_CACHED`` entries, oldest out first) and
keyed by the token's SHA-256. Refusals are not kept. Reasons never contain the token.

The client is lightkube's synchronous one: the checks run in worker threads (the CA signs off
the event loop; the xDS server runs the check in a thread)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from lightkube import ApiError, Client
from lightkube.models.authentication_v1 import TokenReviewSpec
from lightkube.resources.authentication_v1 import TokenReview

from tulle.kube.client import load_config

AUDIENCE = "tulle-ca"
CACHE_SECONDS = 60.0
MAX_CACHED = 10_000
MAX_TOKEN_CHARACTERS = 16_384
POD_NAME_EXTRA = "authentication.kubernetes.io/pod-name"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


class TokenRefused(Exception):  # noqa: N818 (named for the outcome)
    """The token proves no service account; the message says why (never the token)."""


@dataclass(frozen=True)
class ReviewedAccount:
    """What the API server says a token proves: a service account, and the pod it is bound
    to ("" for a token bound to none)."""

    namespace: str
    service_account: str
    pod: str


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim (POSIX seconds) of a JWT, read without checking the signature (the API
    server checks the token; this only bounds how long its answer is kept); None if the token
    is not a JWT with a numeric ``exp``."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = parts[1] + "=" * (-len(parts[1]) % 4)
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    expiry = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        return None
    return float(expiry)


def account_of(status: Any, audience: str) -> ReviewedAccount:
    """The service account a TokenReview's ``status`` (lightkube's model) proves;
    :class:`TokenRefused` naming what is missing."""
    if status is None:
        raise TokenRefused("the API server's TokenReview has no status")
    if not status.authenticated:
        error = f": {status.error}" if status.error else ""
        raise TokenRefused(f"the API server did not authenticate the token{error}")
    audiences = list(status.audiences or ())
    if audience not in audiences:
        raise TokenRefused(
            f"the token is not for audience {audience!r} (the API server's review names "
            f"{audiences or 'no audience'})"
        )
    user = status.user
    username = str(user.username or "") if user is not None else ""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        raise TokenRefused(f"the token is user {username!r}, not a service account")
    namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
    if not namespace or not name or ":" in name:
        raise TokenRefused(f"user {username!r} is not system:serviceaccount:<namespace>:<name>")
    extra = (user.extra or {}) if user is not None else {}
    pods = extra.get(POD_NAME_EXTRA) or []
    pod = str(pods[0]) if len(pods) == 1 else ""
    return ReviewedAccount(namespace, name, pod)


class TokenReviewer:
    """Checks tokens with the API server's TokenReview, keeping positive answers briefly."""

    def __init__(
        self,
        client: Client,
        audience: str = AUDIENCE,
        cache_seconds: float = CACHE_SECONDS,
        max_cached: int = MAX_CACHED,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.max_cached = max_cached
        self.clock = clock
        self.reviews = 0  # TokenReviews sent (the cache's effect, for tests and status)
        self._cache: OrderedDict[str, tuple[float, ReviewedAccount]] = OrderedDict()
        self._lock = threading.Lock()

    @classmethod
    def connect(
        cls, kubeconfig: Path | None, context: str | None, timeout: float = 5.0
    ) -> TokenReviewer:
        """A reviewer for the API server of ``kubeconfig``/``context`` (in-cluster without
        either); ``KubeConfigError`` when there is none."""
        config = load_config(kubeconfig, context)
        return cls(Client(config=config, timeout=httpx2.Timeout(timeout)))

    def review(self, token: str) -> ReviewedAccount:
        """The service account ``token`` proves; :class:`TokenRefused` with the reason."""
        token = token.strip()
        if not token:
            raise TokenRefused("no token presented")
        if len(token) > MAX_TOKEN_CHARACTERS:
            raise TokenRefused(f"the token is longer than {MAX_TOKEN_CHARACTERS} characters")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and cached[0] > now:
                return cached[1]
            if cached is not None:
                del self._cache[key]
        expiry = token_expiry(token)
        if expiry is not None and expiry <= now:
            raise TokenRefused("the token has expired")
        account = account_of(self._ask(token), self.audience)
        until = now + self.cache_seconds
        if expiry is not None:
            until = min(until, expiry)
        with self._lock:
            self._cache[key] = (until, account)
            self._cache.move_to_end(key)
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return account

    def _ask(self, token: str) -> Any:
        """The API server's TokenReview status for ``token``."""
        self.reviews += 1
        review = TokenReview(spec=TokenReviewSpec(token=token, audiences=[self.audience]))
        try:
            answer = self.client.create(review)
        except ApiError as error:
            status = error.status
            raise TokenRefused(
                f"the API server refused the TokenReview: {status.code} {status.message}"
            ) from None
        except httpx2.HTTPError as error:
            reason = f"the API server cannot be reached for a TokenReview: {error}"
            raise TokenRefused(reason) from None
        return answer.status

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()
