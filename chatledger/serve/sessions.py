"""Browser sessions: who is signed in, and the token that guards their forms (CSRF).

Kept in the server's memory only (a restart signs everyone out). The cookie holds a
random session id and nothing else; the API never looks at it (the API takes bearer
tokens), so a cross-site request cannot borrow it there.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

__all__ = ["Session", "Sessions"]


@dataclass
class Session:
    """One browser's session."""

    id: str
    #: The token every form of this session carries; compared in constant time.
    csrf: str
    #: Who this session acts as: set at sign-in (with tokens), else the server's actor.
    actor: str | None
    last_seen: float = field(default_factory=time.monotonic)

    def check_csrf(self, presented: object) -> bool:
        return isinstance(presented, str) and hmac.compare_digest(
            presented.encode("utf-8", "replace"), self.csrf.encode("ascii")
        )


class Sessions:
    """Browser sessions in two pools of at most ``max_sessions`` each: signed-in sessions
    and the others (a visitor who has not signed in yet, or any visitor when the server
    has no tokens). The least recently seen of a pool goes first, so a flood of new
    visitors can never push a signed-in session out. A session is forgotten after
    ``idle_timeout`` seconds without a request."""

    def __init__(self, *, max_sessions: int = 10_000, idle_timeout: float = 12 * 3600) -> None:
        self._visitors: OrderedDict[str, Session] = OrderedDict()
        self._signed_in: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.max_sessions = max_sessions
        self.idle_timeout = idle_timeout

    def __len__(self) -> int:
        return len(self._visitors) + len(self._signed_in)

    def get(self, session_id: str | None) -> Session | None:
        """The live session with that id, or None (unknown, or idle too long)."""
        if not session_id or len(session_id) > 100:
            return None
        now = time.monotonic()
        with self._lock:
            for pool in (self._signed_in, self._visitors):
                session = pool.get(session_id)
                if session is None:
                    continue
                if now - session.last_seen > self.idle_timeout:
                    del pool[session_id]
                    return None
                session.last_seen = now
                pool.move_to_end(session_id)
                return session
            return None

    def _add(self, pool: OrderedDict[str, Session], session: Session) -> Session:
        with self._lock:
            pool[session.id] = session
            while len(pool) > self.max_sessions:
                pool.popitem(last=False)
        return session

    def new(self, actor: str | None) -> Session:
        """A session for a visitor (``actor``: the server's, when it has no tokens)."""
        return self._add(
            self._visitors,
            Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), actor=actor),
        )

    def sign_in(self, old: Session | None, actor: str) -> Session:
        """A new signed-in session (new id and CSRF token, so a planted id is worth
        nothing) acting as ``actor``; the old one is forgotten."""
        if old is not None:
            self.drop(old.id)
        return self._add(
            self._signed_in,
            Session(id=secrets.token_urlsafe(32), csrf=secrets.token_urlsafe(32), actor=actor),
        )

    def drop(self, session_id: str) -> None:
        with self._lock:
            self._visitors.pop(session_id, None)
            self._signed_in.pop(session_id, None)
