"""The library's admin listener, the sidecar admin listener's counterpart for a library-mode
app: ``GET /tap`` (``tulle tap``'s live requests) and nothing else, on loopback only, with the
admin token every request must carry (``Authorization: Bearer``: a tap shows the requests'
paths and peers). It is opened when the app is given ``TULLE_ADMIN_PORT`` (``tulle up`` does);
its token, fresh at each start, is written to ``TULLE_ADMIN_TOKEN_FILE`` (0600), which the
runner names in its state directory, and removed when the runtime stops. It runs on the mesh
runtime's own thread, so it never competes with the app's threads for anything but the GIL."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path

from tulle.obs.tap import Tap
from tulle.security.files import write_atomically
from tulle.security.tokens import bearer_token
from tulle.transport.http_server import Request, Response, error_response
from tulle.transport.tap_http import tap_response

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class LibraryAdmin:
    """Serves ``GET /tap`` to whoever names this listener in ``Host`` and holds ``token``."""

    def __init__(self, tap: Tap, token: str, token_file: Path) -> None:
        self.tap = tap
        self.token = token
        self.token_file = token_file
        self.port = 0  # once bound

    async def __call__(self, request: Request) -> Response:
        host = request.headers.get("host", "").lower()
        hosts = [f"{name}:{self.port}" for name in LOOPBACK_NAMES]
        if not self.port or host not in hosts:
            return error_response(
                403, f"Host {host!r} does not name this admin listener (one of {', '.join(hosts)})"
            )
        given = bearer_token(request.headers.get("authorization", ""))
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            response = error_response(
                401,
                f"{request.method} {request.path} shows the app's requests: it needs "
                f"'Authorization: Bearer <token>', the token in {self.token_file}",
            )
            response.headers["www-authenticate"] = 'Bearer realm="tulle-library-admin"'
            return response
        if request.path != "/tap":
            return error_response(404, f"no such endpoint: {request.method} {request.path}")
        if request.method != "GET":
            response = error_response(405, f"/tap answers GET only, not {request.method}")
            response.headers["allow"] = "GET"
            return response
        return tap_response(self.tap, request)

    def remove_token(self) -> None:
        """On the way out: remove the token file, unless it holds another process's now."""
        try:
            if self.token_file.read_text().strip() == self.token:
                self.token_file.unlink()
        except OSError:
            pass


def new_admin(tap: Tap, token_file: Path) -> LibraryAdmin:
    """The listener's handler with a fresh token, written to ``token_file`` (0600)."""
    token = secrets.token_urlsafe(32)
    write_atomically(token_file, (token + "\n").encode())
    return LibraryAdmin(tap, token, token_file)
