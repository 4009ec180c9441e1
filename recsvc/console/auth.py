"""Token login, server-side sessions and CSRF tokens for the console.

Operators log in with a token (``--auth-token``: admin, ``--read-token``: read-only); the
console answers with a random session id in a cookie that is HttpOnly and SameSite=Strict
(and Secure under TLS). Sessions live in this process's memory, so a restart logs everyone
out. Every POST carries the session's CSRF token in a form field, compared in constant
time; a change also needs the admin role.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Role = Literal["admin", "read", "anonymous"]
COOKIE = "recsvc_console"
SESSION_TTL_S = 12 * 3600
MAX_TOKEN_CHARS = 512
MAX_SESSIONS = 10_000


@dataclass
class Session:
    sid: str
    role: Role
    csrf: str
    expires: float = field(default_factory=lambda: time.time() + SESSION_TTL_S)
    flash: str = ""  # one message for the next page (after a redirect)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def logged_in(self) -> bool:
        return self.role != "anonymous"


def _matches(given: str, tokens: Sequence[str]) -> bool:
    """Constant-time comparison against every token (no early exit on a match)."""
    found = False
    data = given.encode()
    for token in tokens:
        found |= hmac.compare_digest(data, token.encode())
    return found


class Sessions:
    """Who is logged in, by session id."""

    def __init__(self, admin_tokens: Sequence[str], read_tokens: Sequence[str]) -> None:
        if not admin_tokens:
            raise ValueError("the console needs at least one admin token")
        self._admin = tuple(admin_tokens)
        self._read = tuple(read_tokens)
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def role_of(self, token: str) -> Role | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        if _matches(token, self._admin):
            return "admin"
        if _matches(token, self._read):
            return "read"
        return None

    def new(self, role: Role) -> Session:
        session = Session(secrets.token_urlsafe(32), role, secrets.token_urlsafe(32))
        with self._lock:
            self._expire()
            self._sessions[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        if not sid or len(sid) > 100:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None or session.expires < time.time():
                self._sessions.pop(sid, None)
                return None
            return session

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)

    def _expire(self) -> None:
        now = time.time()
        for sid in [s for s, v in self._sessions.items() if v.expires < now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:  # oldest first (dicts keep insertion order)
            del self._sessions[next(iter(self._sessions))]


def csrf_ok(session: Session, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), session.csrf.encode())
