"""The dashboard's way in for a browser, which cannot send the admin token as a header.

``tulle dashboard`` (holding the admin token) asks the API for a one-time login code
(``POST /api/v1/dashboard/logins``) and opens the browser at ``/dashboard/login?code=...``; the
control plane swaps the code, once and within :data:`LOGIN_SECONDS`, for a session cookie
(``HttpOnly``: no script reads it; ``SameSite=Strict``: no other site's page sends it; path
``/``) and redirects to the dashboard, so the URL left in the browser's history holds a spent
code, never the admin token. A session may only read (``GET``): it cannot apply, delete or
register anything, so a page that tricks the browser into a request gains nothing it could
change. Sessions live in the control plane's memory for :data:`SESSION_SECONDS` (a restart
ends them: run ``tulle dashboard`` again); codes and sessions are kept as SHA-256 digests and
compared in constant time, so even a memory dump shows no usable credential."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

LOGIN_SECONDS = 60.0
"""How long a login code may be used (once)."""

SESSION_SECONDS = 12 * 3600.0
"""How long a dashboard session lasts."""

MAX_PENDING = 32
"""Codes not yet used kept at once (the oldest are dropped past it)."""

MAX_SESSIONS = 256

COOKIE = "tulle_session"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Sessions:
    """One-time login codes and the sessions they become."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._codes: dict[str, float] = {}  # digest → expiry
        self._sessions: dict[str, float] = {}

    def new_code(self) -> str:
        """A login code, good once within :data:`LOGIN_SECONDS`."""
        self._expire()
        code = secrets.token_urlsafe(32)
        self._codes[_digest(code)] = self.clock() + LOGIN_SECONDS
        while len(self._codes) > MAX_PENDING:
            self._codes.pop(next(iter(self._codes)))
        return code

    def redeem(self, code: str) -> str | None:
        """A new session for a valid unused code (the code is spent), else None."""
        self._expire()
        if self._codes.pop(_digest(code), None) is None:
            return None
        session = secrets.token_urlsafe(32)
        self._sessions[_digest(session)] = self.clock() + SESSION_SECONDS
        while len(self._sessions) > MAX_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))
        return session

    def valid(self, session: str) -> bool:
        """Whether ``session`` is a live session (dictionary lookup by digest: no timing
        difference says how much of a guess was right)."""
        expiry = self._sessions.get(_digest(session))
        return expiry is not None and expiry > self.clock()

    def _expire(self) -> None:
        now = self.clock()
        for table in (self._codes, self._sessions):
            for key in [k for k, expiry in table.items() if expiry <= now]:
                del table[key]

    @staticmethod
    def cookie(session: str) -> str:
        """The ``Set-Cookie`` value of a session."""
        return (
            f"{COOKIE}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={int(SESSION_SECONDS)}"
        )


def session_of(cookie_header: str) -> str | None:
    """The session cookie's value in a ``Cookie`` header, if any."""
    for part in cookie_header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None
