"""Events held while Autotask refuses atrelay's credentials, and their release once it accepts them.

A 401 or 403 from Autotask says nothing about the event: every event would fail the same way until an
operator fixes the API user or the settings. So such a run ends ``retrying`` (``pipelines.runbase``),
never ``dead``, with a reason starting ``autotask-auth``; when a worker finds that the credentials work
again (at its start, or its periodic check), it releases them all at once instead of leaving each to
its own backoff, and nobody has to replay anything.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col, select

from pipelines.audit import EventState, InboundEvent
from pipelines.db import db_now, session_scope

__all__ = ["HELD_PREFIX", "held_count", "release_credential_holds"]

#: The reason a held event carries (AuthError's code): what finds them again.
HELD_PREFIX = "autotask-auth"


def _held() -> object:
    return (col(InboundEvent.state) == EventState.RETRYING) & col(InboundEvent.reason).startswith(HELD_PREFIX)


def held_count(db: str) -> int:
    from sqlalchemy import func

    with session_scope(db) as s:
        return int(s.exec(select(func.count()).where(_held())).one() or 0)  # type: ignore[arg-type]


def release_credential_holds(db: str, limit: int = 5000) -> list[int]:
    """Make every held event due now; return their ids (the caller queues them)."""
    now = db_now(db)
    with session_scope(db) as s:
        ids = [i for i in s.exec(select(InboundEvent.id).where(_held()).order_by(col(InboundEvent.id))  # type: ignore[arg-type]
                                 .limit(limit)).all() if i is not None]
        if ids:
            s.execute(update(InboundEvent).where(col(InboundEvent.id).in_(ids), _held())  # type: ignore[arg-type]
                      .values(not_before=now, updated_at=now))
    return ids
