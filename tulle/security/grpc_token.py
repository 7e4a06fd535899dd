"""The bootstrap token in the shape stock grpcio can send to the secure xDS port.

grpcio's xDS client authenticates to its server with call credentials from its bootstrap (gRFC
A97: ``"call_creds": [{"type": "jwt_token_file", "config": {"jwt_token_file": PATH}}]``, behind
``GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true`` in grpcio 1.85). It reads only a JWT from that
file: three ``.``-separated parts whose second is base64url JSON with an ``exp`` (it caches the
token until then), and sends ``authorization: Bearer <the file's bytes>``. A bootstrap token is
not a JWT, so ``tulle agent`` writes it as the signature part of an unsigned JWT (``alg: none``,
``typ: tulle-bootstrap``) and the control plane takes the token back out (:func:`unwrap`).

The envelope proves nothing and hides nothing: the secret is the token inside, checked as any
bearer token; the header and claims are there only because grpcio parses them.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from datetime import datetime

ENVELOPE_TYPE = "tulle-bootstrap"
_HEADER = {"alg": "none", "typ": ENVELOPE_TYPE}


def _encode(data: Mapping[str, object]) -> str:
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(part: str) -> object:
    padded = part + "=" * (-len(part) % 4)
    return json.loads(base64.urlsafe_b64decode(padded.encode("ascii")))


def wrap(token: str, expires: datetime) -> str:
    """``token`` as the JWT grpcio's ``jwt_token_file`` reads, ``exp`` at ``expires`` (after which
    grpcio reads the file again). No newline: grpcio sends the file's bytes as they are."""
    if not token or "." in token or any(c.isspace() for c in token):
        raise ValueError("a bootstrap token is one word without '.'")
    claims = {"exp": int(expires.timestamp())}
    return f"{_encode(_HEADER)}.{_encode(claims)}.{token}"


def unwrap(credential: str) -> str:
    """The bootstrap token of an envelope :func:`wrap` made; any other credential unchanged
    (so a plain bootstrap token, as the sidecar and the library send it, passes through)."""
    parts = credential.split(".")
    if len(parts) != 3 or not parts[2]:
        return credential
    try:
        header = _decode(parts[0])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return credential
    if isinstance(header, dict) and header.get("typ") == ENVELOPE_TYPE:
        return parts[2]
    return credential
