"""Dashboard sessions in the audit database (table ``ops_sessions``, migration 0012).

Signed cookies alone cannot be revoked: sign-out on one ingress process left the cookie good on every
other, and a restart forgot who had signed out. Here a session is a row: the cookie holds a random
value, the row its SHA-256 digest, the expiry and, once signed out, the end. Every process reads the
same rows, so sign-out and expiry hold everywhere and across restarts.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import delete, or_, update
from sqlmodel import col, select

from pipelines.audit import OpsSession
from pipelines.db import session_scope, utcnow

__all__ = ["digest_of", "end_session", "open_session", "session_alive"]

#: Rows of sessions that ended or expired are deleted this long afterwards (kept a while for the record).
KEEP_ENDED = timedelta(days=7)


def digest_of(value: str) -> str:
    """What is stored for a cookie value (never the value itself)."""
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()


def open_session(db: str, value: str, *, key_id: str, lifetime_seconds: int) -> None:
    """Record a new session (the cookie holds ``value``); prune rows long ended or expired."""
    now = utcnow()
    with session_scope(db) as s:
        s.add(OpsSession(digest=digest_of(value), key_id=key_id, created_at=now,
                         expires_at=now + timedelta(seconds=lifetime_seconds)))
        s.execute(delete(OpsSession).where(or_(col(OpsSession.expires_at) < now - KEEP_ENDED,
                                               col(OpsSession.ended_at) < now - KEEP_ENDED)))


def session_alive(db: str, value: str, *, key_id: str) -> str | None:
    """The session's digest if ``value`` names a session made under this key, not ended, not expired."""
    if not value or len(value) > 200:
        return None
    digest = digest_of(value)
    with session_scope(db) as s:
        found = s.exec(select(OpsSession.digest).where(
            OpsSession.digest == digest, OpsSession.key_id == key_id, col(OpsSession.ended_at).is_(None),
            col(OpsSession.expires_at) > utcnow())).first()
    return found


def end_session(db: str, digest: str) -> None:
    """Sign-out: the session ends for every process at once."""
    with session_scope(db) as s:
        s.execute(update(OpsSession).where(col(OpsSession.digest) == digest, col(OpsSession.ended_at).is_(None))
                  .values(ended_at=utcnow()))
