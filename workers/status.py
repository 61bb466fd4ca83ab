"""What operators need to see, gathered once for the dashboard, /metrics, /readyz and `atrelay doctor`."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, inspect, text
from sqlmodel import col, select

from pipelines.audit import EventState, InboundEvent, OutboundAttempt, PollRun
from pipelines.db import engine_for, session_scope, utcnow
from pipelines.liveness import Liveness, assess
from workers.settings import Settings

__all__ = ["Health", "broker_queue_depth", "check_broker", "health", "last_reconciliation", "liveness",
           "open_state_counts", "picklists_fresh", "picklists_loaded_at", "quota_usage", "state_counts"]


# Dead and invalid events are final but wait for an operator, so they are counted with the open ones.
_OPEN = [s.value for s in EventState if not s.final] + [EventState.DEAD.value, EventState.INVALID.value]


@dataclass
class Health:
    counts: dict[str, int] = field(default_factory=dict)
    last_poll: PollRun | None = None
    last_event_by_source: dict[str, datetime] = field(default_factory=dict)
    picklists_loaded_at: datetime | None = None
    queue_depth: int | None = None
    quota: Any = None


def state_counts(db: str) -> dict[str, int]:
    with session_scope(db) as s:
        rows = s.exec(select(InboundEvent.state, func.count()).group_by(InboundEvent.state)).all()
    counts = {state.value: 0 for state in EventState}
    counts.update({str(k): int(v) for k, v in rows})
    return counts


def open_state_counts(db: str) -> dict[str, int]:
    """Events waiting, in progress or dead: through ix_inbound_state_updated, never a scan of history."""
    with session_scope(db) as s:
        rows = s.exec(select(InboundEvent.state, func.count()).where(col(InboundEvent.state).in_(_OPEN))
                      .group_by(InboundEvent.state)).all()
    counts = dict.fromkeys(_OPEN, 0)
    counts.update({str(k): int(v) for k, v in rows})
    return counts


def last_reconciliation(db: str) -> datetime | None:
    """When the last Autotask reconciliation poll finished (newest first through the source index)."""
    with session_scope(db) as s:
        return s.exec(select(PollRun.finished_at).where(PollRun.source == "autotask", PollRun.outcome != "running")
                      .order_by(col(PollRun.id).desc()).limit(1)).first()


#: How far back (in attempts) readiness looks for a picklist load: workers reload them every TTL, so a
#: load is recent or absent; unbounded, an unauthenticated /readyz would scan every attempt ever made.
_PICKLIST_LOOKBACK = 20_000


def picklists_loaded_at(db: str) -> datetime | None:
    """When a worker last read the picklists successfully (its attempts are in the audit log)."""
    with session_scope(db) as s:
        newest = s.exec(select(func.max(OutboundAttempt.id))).one()
        if newest is None:
            return None
        at = s.exec(select(OutboundAttempt.at).where(
            col(OutboundAttempt.id) > newest - _PICKLIST_LOOKBACK,
            col(OutboundAttempt.path).like("%entityInformation/fields"), OutboundAttempt.status_code == 200)
            .order_by(col(OutboundAttempt.id).desc()).limit(1)).first()
    return at


def broker_queue_depth(settings: Settings) -> int | None:
    """Messages waiting on the atrelay queue; None when the broker cannot be asked."""
    url = settings.effective_broker_url
    try:
        if url.startswith(("redis://", "rediss://")):
            import redis

            return int(redis.Redis.from_url(url, socket_timeout=2).llen("atrelay"))
        if url.startswith("sqla+"):
            engine = engine_for(url.removeprefix("sqla+"))
            with engine.connect() as conn:
                if not inspect(conn).has_table("kombu_message"):
                    return 0  # no worker has declared the queue yet: nothing can be waiting
                return int(conn.execute(text("SELECT count(*) FROM kombu_message WHERE visible = 1")).scalar() or 0)
    except Exception:
        return None
    return None


def check_broker(settings: Settings, timeout: float = 3.0) -> str | None:
    """None when the broker accepts a connection, else the reason."""
    from kombu.connection import Connection

    try:
        with Connection(settings.effective_broker_url, connect_timeout=timeout) as conn:  # type: ignore[no-untyped-call]
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as exc:
        return f"broker {settings.effective_broker_url.split('@')[-1]} unreachable: {type(exc).__name__}: {exc}"
    return None


def health(settings: Settings, *, with_quota: bool = True) -> Health:
    db = settings.effective_database_url
    out = Health(counts=state_counts(db))
    with session_scope(db) as s:
        out.last_poll = s.exec(select(PollRun).order_by(col(PollRun.id).desc()).limit(1)).first()
        rows = s.exec(select(InboundEvent.source, func.max(InboundEvent.received_at))
                      .group_by(InboundEvent.source)).all()
        out.last_event_by_source = {str(src): at for src, at in rows}
    out.picklists_loaded_at = picklists_loaded_at(db)
    out.queue_depth = broker_queue_depth(settings)
    if with_quota:
        out.quota = quota_usage(settings)
    return out


@functools.lru_cache(maxsize=4)
def _governor(broker_url: str, db: str, max_in_flight: int, hourly_budget: int) -> Any:
    from pipelines.governor import governor_for

    return governor_for(broker_url=broker_url, db=db, max_in_flight=max_in_flight, hourly_budget=hourly_budget)


def quota_usage(settings: Settings) -> Any:
    """The governor's view (in flight, used vs budget, tenant), or None if its store is unreachable."""
    try:
        return _governor(settings.effective_broker_url, settings.effective_database_url,
                         settings.autotask_max_in_flight, settings.autotask_hourly_budget).usage()
    except Exception:
        return None


def picklists_fresh(settings: Settings, loaded_at: datetime | None) -> bool:
    fresh_for = timedelta(seconds=2 * settings.autotask_picklist_ttl_seconds)
    return loaded_at is not None and utcnow() - loaded_at < fresh_for


def liveness(settings: Settings) -> Liveness:
    """Who is alive, what waits, what is overdue: the one reading every screen and alert uses."""
    return assess(settings.effective_database_url, heartbeat_timeout=settings.heartbeat_timeout_seconds,
                  stuck_after=settings.stuck_after_seconds,
                  timezest_poll_seconds=float(settings.timezest_poll_seconds) if settings.timezest_api_key else None,
                  reconcile_seconds=float(settings.autotask_reconcile_seconds) if settings.autotask_configured
                  else None)
