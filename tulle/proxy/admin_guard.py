"""Who may use the sidecar's admin listener. It listens on loopback only, but a reachable socket
proves little: any local process, and any web page a local browser shows, can send it requests.
So:

- every admin request must name the listener itself in ``Host`` (``127.0.0.1:<port>``,
  ``localhost:<port>`` or ``[::1]:<port>``), which refuses DNS rebinding (a page whose name
  resolves to 127.0.0.1 sends its own name as Host);
- an ``Origin`` header, when there is one, must be the listener's own origin: a cross-site form
  or fetch (which browsers send with its page's Origin, without a CORS preflight for a simple
  POST) is refused;
- a state-changing request (``POST /drain``, ``POST /quitquitquit``), and ``GET /tap`` (it
  shows the requests' paths and peers), must carry ``Authorization: Bearer <token>``, the token
  the sidecar writes at start into a file only its user can read (mode 0600, see
  :func:`write_token_file`).

The checks are pure (:class:`AdminGuard`); the token file is written and removed here too."""

from __future__ import annotations

import hmac
import ipaddress
import os
import secrets
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tulle.transport.http_server import Request, Response, error_response

TOKEN_BYTES = 32  # of randomness: 43 characters of URL-safe base64 in the file
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
TOKEN_FILE_HELP = (
    "$XDG_RUNTIME_DIR/tulle/proxy-<pod>.<namespace>-<admin port>.admin-token "
    "(/tmp/tulle-<uid>/... when XDG_RUNTIME_DIR is not set)"
)


class AdminTokenError(OSError):
    """The admin token file cannot be written safely; the message says where and why."""


def new_token() -> str:
    """A fresh admin token."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def run_dir() -> Path:
    """The directory of a sidecar's run-time files when it is given none:
    ``$XDG_RUNTIME_DIR/tulle``, else ``/tmp/tulle-<uid>``."""
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime):
        return Path(runtime) / "tulle"
    return Path(tempfile.gettempdir()) / f"tulle-{os.getuid()}"


def default_token_path(pod: str, namespace: str, port: int) -> Path:
    """Where a sidecar writes its admin token when ``--admin-token-file`` is not given (the
    port is the admin listener's, once bound: two sidecars of one pod name in two network
    namespaces would otherwise share a file)."""
    return run_dir() / f"proxy-{pod}.{namespace}-{port}.admin-token"


def write_token_file(path: Path, token: str) -> None:
    """Write ``token`` (and a newline) to ``path``, readable and writable by this user only
    (0600), replacing what was there at once. The directory is made (0700) when missing; one
    that another user could change files in (writable by group or others, not sticky, or owned
    by another user than this one or root) is refused: a file there could be swapped."""
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as error:
        raise AdminTokenError(f"admin token file {path}: {error.strerror or error}") from None
    shared = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not info.st_mode & stat.S_ISVTX
    if info.st_uid not in (os.getuid(), 0) or shared:
        raise AdminTokenError(
            f"admin token file {path}: its directory {directory} can be changed by other users "
            f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o}); choose another "
            "with --admin-token-file"
        )
    temporary = directory / f".{path.name}.{os.getpid()}"
    try:
        temporary.unlink(missing_ok=True)
        descriptor = os.open(
            temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        with os.fdopen(descriptor, "w") as file:
            file.write(token + "\n")
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise AdminTokenError(f"admin token file {path}: {error.strerror or error}") from None


def read_token_file(path: Path) -> str:
    """The token a sidecar wrote to ``path`` (what a client sends as ``Bearer``)."""
    return path.read_text().strip()


def remove_token_file(path: Path, token: str) -> None:
    """Remove the token file on the way out, unless it holds another sidecar's token now."""
    try:
        if read_token_file(path) == token:
            path.unlink()
    except OSError:
        pass


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address an admin listener is asked to bind) is on loopback only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class AdminGuard:
    """The admin listener's checks, with the sidecar's ``token``. Until the listener is bound
    and its token written (:meth:`listening`), every request is refused."""

    token: str
    token_file: Path | None = None
    port: int = 0
    address: str = "127.0.0.1"  # the loopback address bound (another than 127.0.0.1 may be)

    def listening(self, address: str, port: int, token_file: Path) -> None:
        """The listener is on ``address:port``; its token is in ``token_file``."""
        self.address, self.port, self.token_file = address, port, token_file

    def hosts(self) -> tuple[str, ...]:
        """The ``Host`` values that name this listener."""
        bound = f"[{self.address}]" if ":" in self.address else self.address
        names = LOOPBACK_HOSTS if bound in LOOPBACK_HOSTS else (*LOOPBACK_HOSTS, bound)
        return tuple(f"{name}:{self.port}" for name in names)

    def refusal(
        self, request: Request, changes_state: bool, why: str = "changes the sidecar's state"
    ) -> Response | None:
        """Why ``request`` is refused (403 for a foreign Host or Origin, 401 for a missing or
        wrong token on a state-changing request, or another that needs the token, ``why``),
        or None when it may go on."""
        hosts = self.hosts()
        host = request.headers.get("host", "").lower()
        if not self.port or host not in hosts:
            shown = repr(host) if host else "none"
            return error_response(
                403,
                f"Host {shown} does not name this admin listener (one of {', '.join(hosts)}): "
                "refused, as a request through a DNS name (DNS rebinding) would be",
            )
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in {f"http://{h}" for h in hosts}:
            return error_response(
                403,
                f"Origin {origin!r} is not this admin listener's own: cross-origin requests "
                "(a web page's form or script) are refused",
            )
        if not changes_state:
            return None
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return self._unauthorized(
                f"{request.method} {request.path} {why}: it needs "
                f"'Authorization: Bearer <token>', the token in {self.token_file}"
            )
        if not hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return self._unauthorized(
                f"the bearer token is not this sidecar's admin token (the one in {self.token_file})"
            )
        return None

    @staticmethod
    def _unauthorized(reason: str) -> Response:
        response = error_response(401, reason)
        response.headers["www-authenticate"] = 'Bearer realm="tulle-proxy-admin"'
        return response
