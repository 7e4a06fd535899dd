"""What TLS failures are called: :class:`TlsError` with a short reason (:func:`describe`), and
the callables the TLS layer takes from its callers (kept apart from :mod:`tulle.transport.tls`,
which mypyc can compile, because an exception class deriving from ConnectionError cannot be)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from typing import Any

PeerCert = dict[str, Any]
"""``SSLObject.getpeercert()``: empty when the context did not verify the peer."""
VerifyPeer = Callable[[PeerCert | None, bytes | None], None]
TlsOrigin = tuple[ssl.SSLContext, VerifyPeer, str]
"""How a client speaks mTLS to an endpoint: its context, the check of the server's identity,
and the SNI to send."""
"""Checks the peer's certificate (dict, DER) after the handshake; raises with the reason."""
OnRefused = Callable[[Any, str], None]
"""Told (peer address, reason) when a connection is refused before its inner protocol starts."""

_REASONS = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "peer did not present a certificate",
    "WRONG_VERSION_NUMBER": "not TLS",
    "HTTP_REQUEST": "not TLS",
    "HTTPS_PROXY_REQUEST": "not TLS",
    "UNKNOWN_PROTOCOL": "not TLS",
    "PACKET_LENGTH_TOO_LONG": "not TLS",
    "UNEXPECTED_EOF_WHILE_READING": "connection closed during the handshake",
    "NO_SHARED_CIPHER": "no cipher in common with the peer",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common with the peer",
    "NO_APPLICATION_PROTOCOL": "no ALPN protocol in common with the peer",
}


class TlsError(ConnectionError):
    """A TLS connection failed or was refused; ``reason`` says why, in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe(error: BaseException) -> str:
    """A short reason for a TLS failure: ``certificate verify failed: certificate has expired``,
    ``peer did not present a certificate``, ``not TLS``, ``alert from peer: unknown ca``."""
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError) and error.reason:
        reason = str(error.reason)
        known = _REASONS.get(reason)
        if known is not None:
            return known
        alert = reason.find("ALERT_")
        if alert >= 0:  # TLSV13_ALERT_CERTIFICATE_REQUIRED: an alert the peer sent
            return "alert from peer: " + reason[alert + 6 :].lower().replace("_", " ")
        return reason.lower().replace("_", " ")
    return str(error) or type(error).__name__
