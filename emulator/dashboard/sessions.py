"""Dashboard log-in: an API key posted once is exchanged for a random session id in an HttpOnly cookie.

Why not the key in the URL (`?key=`): URLs land in browser history, server logs and Referer
headers. Why not the key itself in the cookie: a cookie jar is read by every tool that exports
browser data; a session id is useless once the emulator restarts or the user logs out. Sessions
live in memory only (a restart logs everyone out), expire after SESSION_TTL_S, and are capped.

The cookie is HttpOnly (no script can read it), SameSite=Strict (no other site's page can send
it, which also makes the POST logout CSRF-safe) and scoped to /dashboard. It is not `Secure`
because `fwemu serve` speaks plain HTTP on loopback; a browser would drop a Secure cookie there.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

COOKIE = "fwemu_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_TTL_S = 12 * 3600
MAX_SESSIONS = 1024
EXTENSION_KEY = "dashboard_sessions"


@dataclass(frozen=True)
class Session:
    account: str
    key: str            # the API key it was opened with: a key removed from the settings ends it
    expires_s: float


class SessionTable:
    def __init__(self, ttl_s: float = SESSION_TTL_S, cap: int = MAX_SESSIONS, clock=time.monotonic):
        self.ttl_s, self.cap, self.clock = ttl_s, cap, clock
        self._lock = threading.Lock()
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def open(self, account: str, key: str) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = Session(account, key, self.clock() + self.ttl_s)
            while len(self._sessions) > self.cap:
                self._sessions.popitem(last=False)
        return sid

    def account(self, sid: str | None, api_keys: dict[str, str]) -> str | None:
        """The session's account, or None if unknown, expired, or its key no longer maps to it."""
        if not sid or len(sid) > 128:
            return None
        with self._lock:
            session = self._sessions.get(sid)
            if session is None:
                return None
            if session.expires_s <= self.clock() or api_keys.get(session.key) != session.account:
                del self._sessions[sid]
                return None
            return session.account

    def end(self, sid: str | None) -> None:
        if sid:
            with self._lock:
                self._sessions.pop(sid, None)

    def __len__(self) -> int:
        return len(self._sessions)


def account_for_key(key: str, api_keys: dict[str, str]) -> str | None:
    """The key's account, compared in constant time per configured key (a log-in form is guessable)."""
    found = None
    for known, account in api_keys.items():
        if hmac.compare_digest(known.encode(), key.encode()):
            found = account
    return found
