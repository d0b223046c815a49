# Runs on CPython (host): console sessions (idle timeout, logout) and the login lockout.
"""In-memory sessions of the staff console.

A session id is 32 random bytes (URL-safe) in an HttpOnly, SameSite=Strict cookie (Secure
when the request came over TLS). Sessions live in the daemon's memory: a restart logs every
one out. A session unused for ``idle_s`` seconds is gone. :class:`LoginThrottle` locks a
name for ``lockout_s`` seconds after ``max_failures`` wrong passwords in a row.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

#: Cookie names.
SESSION_COOKIE = "tk_session"


@dataclass
class Session:
    """One logged-in staff member."""

    name: str
    role: str
    last_used: float
    #: The one store the account is scoped to (None: every store of the chain).
    store: str | None = None


class SessionStore:
    """Session id -> :class:`Session`, thread-safe, with an idle timeout."""

    def __init__(self, idle_s: float = 900.0, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.idle_s = idle_s
        self.clock = clock
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self, name: str, role: str, store: str | None = None) -> str:
        """A new session for ``name`` (scoped to ``store``, None: every store); returns its
        id."""
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[sid] = Session(name, role, self.clock(), store)
        return sid

    def get(self, sid: str | None) -> Session | None:
        """The live session ``sid`` (its idle clock restarts), or None."""
        if not sid:
            return None
        now = self.clock()
        with self._lock:
            s = self._sessions.get(sid)
            if s is None:
                return None
            if now - s.last_used > self.idle_s:
                del self._sessions[sid]
                return None
            s.last_used = now
            return s

    def alive(self, sid: str | None) -> bool:
        """True while ``sid`` is a live session (its idle clock does not restart)."""
        with self._lock:
            s = self._sessions.get(sid or "")
            return s is not None and self.clock() - s.last_used <= self.idle_s

    def end(self, sid: str | None) -> None:
        """Log out ``sid`` (no-op when unknown)."""
        with self._lock:
            self._sessions.pop(sid or "", None)

    def end_all(self, name: str) -> None:
        """Log out every session of ``name`` (account disabled)."""
        with self._lock:
            for sid in [k for k, s in self._sessions.items() if s.name == name]:
                del self._sessions[sid]


class LoginThrottle:
    """Counts wrong passwords per name; locks the name after ``max_failures`` in a row."""

    def __init__(self, max_failures: int = 5, lockout_s: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_failures = max_failures
        self.lockout_s = lockout_s
        self.clock = clock
        self._failures: dict[str, int] = {}
        self._locked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def locked(self, name: str) -> bool:
        """True while ``name`` is locked out."""
        with self._lock:
            until = self._locked_until.get(name)
            if until is None:
                return False
            if self.clock() >= until:
                del self._locked_until[name]
                self._failures.pop(name, None)
                return False
            return True

    def failed(self, name: str) -> bool:
        """Count a wrong password; True when this one locked the name."""
        with self._lock:
            n = self._failures.get(name, 0) + 1
            self._failures[name] = n
            if n >= self.max_failures:
                self._locked_until[name] = self.clock() + self.lockout_s
                return True
            return False

    def succeeded(self, name: str) -> None:
        """A right password: the count starts again."""
        with self._lock:
            self._failures.pop(name, None)
