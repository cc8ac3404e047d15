"""Who is looking at the web mailbox, and whether a form post really came from our own page.

Browsers cannot send bearer headers, so `mailctl web` drops a one-time login secret (its sha256
as a file name under `.mcp_mail/web-logins/`, 0700; only the mailbox's OS user can do that). The
first visit of the login URL unlinks the file — exactly one visit wins — and gets an HttpOnly,
SameSite=Strict session cookie. Sessions live in memory: a restarted daemon asks for a new link.
Bearer/JWT headers and the trusted-localhost rule of the bridge's gate still apply.

CSRF: every form carries a token equal to a SameSite=Strict cookie (double submit), and a POST's
Origin must be our own. Requests authenticated by an Authorization header need no token: a browser
on another site can never attach one. This module does not render pages or check RBAC for tools.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from maild.transport.http.auth import Authenticator, Identity, Unauthorized
from shared.weblogin import login_dir, secret_file

SESSION_COOKIE = "mail_session"
CSRF_COOKIE = "mail_csrf"
CSRF_FIELD = "csrf"
MAX_SESSIONS = 10_000


@dataclass(frozen=True)
class Viewer:
    identity: Identity
    via_header: bool  # authenticated by an Authorization header: no CSRF token needed
    csrf: str  # the token this viewer's forms must carry (empty when via_header)


class WebAuth:
    def __init__(self, authenticator: Authenticator, state_dir: Path, login_ttl: float, session_seconds: float) -> None:
        self._auth = authenticator
        self._state_dir = state_dir
        self._logins = login_dir(state_dir)
        self._login_ttl = login_ttl
        self.session_seconds = session_seconds
        self._sessions: dict[str, tuple[float, str]] = {}  # sha256(cookie) -> (expires, subject)

    def redeem(self, secret: str) -> str | None:
        """Exchange a login secret for a new session cookie value; None if unknown, used or expired."""
        if not secret or len(secret) > 256:
            return None
        path = secret_file(self._state_dir, secret)
        try:
            created = path.stat().st_mtime
            path.unlink()  # atomic: of two racing visits, exactly one unlinks
        except OSError:
            return None
        if time.time() - created > self._login_ttl:
            return None
        self._sweep()
        cookie = secrets.token_urlsafe(32)
        subject = f"web:{hashlib.sha256(cookie.encode()).hexdigest()[:12]}"
        self._sessions[hashlib.sha256(cookie.encode()).hexdigest()] = (time.time() + self.session_seconds, subject)
        return cookie

    def logout(self, cookie: str | None) -> None:
        if cookie:
            self._sessions.pop(hashlib.sha256(cookie.encode()).hexdigest(), None)

    def _sweep(self) -> None:
        now = time.time()
        for key in [k for k, (until, _) in self._sessions.items() if until < now]:
            del self._sessions[key]
        if len(self._sessions) >= MAX_SESSIONS:
            self._sessions.clear()  # a bound, not a policy: people log in again
        if self._logins.is_dir():  # expired login files nobody used
            for stale in self._logins.iterdir():
                try:
                    if now - stale.stat().st_mtime > self._login_ttl:
                        stale.unlink()
                except OSError:
                    continue

    async def identify(self, headers: dict[bytes, bytes], cookies: dict[str, str],
                       client_host: str | None) -> Viewer | None:
        """The viewer, or None when nothing identifies them (show the login page / answer 401).

        Raises Unauthorized for a bad Authorization header: a script sent wrong credentials."""
        if headers.get(b"authorization"):
            return Viewer(await self._auth.authenticate(headers, client_host), via_header=True, csrf="")
        csrf = cookies.get(CSRF_COOKIE, "")
        session = cookies.get(SESSION_COOKIE)
        if session:
            found = self._sessions.get(hashlib.sha256(session.encode()).hexdigest())
            if found is not None and found[0] > time.time():
                return Viewer(Identity(subject=found[1], role="writer"), via_header=False, csrf=csrf)
        try:
            identity = await self._auth.authenticate(headers, client_host)  # trusted localhost, if enabled
        except Unauthorized:
            return None
        return Viewer(identity, via_header=False, csrf=csrf)

    @staticmethod
    def csrf_ok(viewer: Viewer, submitted: str) -> bool:
        if viewer.via_header:
            return True
        return bool(viewer.csrf) and hmac.compare_digest(viewer.csrf.encode(), submitted.encode())

    @staticmethod
    def new_csrf() -> str:
        return secrets.token_urlsafe(24)
