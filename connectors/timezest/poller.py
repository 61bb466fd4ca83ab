"""The TimeZest poller: diff scheduling requests against what we saw last, emit one event per change.

TimeZest has no webhooks. Each poll lists requests newest-first down to the high-water mark (the
newest ``created_at`` we know, less an overlap), and re-checks requests we last saw ``new`` or
``sent``. A change emits ``timezest.<status>`` with external id ``"{request id}:{status}"``, so
re-polls never duplicate. A request first seen already ``scheduled`` emits only that. All HTTP is
done before the one database commit, so a failed poll changes nothing and the next catches up.

The very first poll only records a baseline (emitting events for requests changed in the last hour),
so switching atrelay on does not replay months of history onto old tickets.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select

from connectors.timezest.client import TimezestClient, TimezestError
from connectors.timezest.parse import STATUS_EVENTS, SchedulingRequest
from pipelines.audit import EventState, InboundEvent, PollRun, TimezestRequest
from pipelines.db import session_scope, utcnow
from workers.settings import Settings

__all__ = ["PollResult", "poll_from_settings", "poll_once"]

log = logging.getLogger("atrelay.timezest")
SOURCE = "timezest"
OVERLAP_SECONDS = 3600  # requests created shortly before the mark may appear late in the listing
BOOTSTRAP_WINDOW_SECONDS = 3600
BOOTSTRAP_DAYS = 30
RECHECK_LIMIT = 100
_OPEN = ("new", "sent")


@dataclass(frozen=True)
class PollResult:
    outcome: str
    seen: int = 0
    emitted: list[int] | None = None
    error: str | None = None


def _start(db: str) -> int | None:
    """Open a poll run, unless another started in the last 5 minutes is still running."""
    with session_scope(db) as s:
        busy = s.exec(
            select(PollRun.id).where(
                PollRun.source == SOURCE, PollRun.outcome == "running",
                col(PollRun.started_at) > utcnow() - timedelta(minutes=5),
            )
        ).first()
        if busy is not None:
            return None
        run = PollRun(source=SOURCE)
        s.add(run)
        s.flush()
        return run.id


def _finish(db: str, run_id: int, outcome: str, *, seen: int = 0, emitted: int = 0,
            error: str | None = None, high_water: int | None = None) -> None:
    with session_scope(db) as s:
        run = s.get(PollRun, run_id)
        assert run is not None
        run.finished_at, run.outcome, run.error = utcnow(), outcome, error
        run.requests_seen, run.events_emitted, run.high_water = seen, emitted, high_water


def _fetch(db: str, client: TimezestClient) -> tuple[dict[str, SchedulingRequest], bool]:
    with session_scope(db) as s:
        high_water = s.exec(select(func.max(TimezestRequest.created_at))).one()
        open_ids = list(s.exec(
            select(TimezestRequest.id).where(col(TimezestRequest.status).in_(_OPEN))
            .order_by(col(TimezestRequest.last_checked_at)).limit(RECHECK_LIMIT * 10)
        ).all())
    bootstrap = high_water is None
    seen: dict[str, SchedulingRequest] = {}
    if bootstrap:
        since = int(time.time()) - BOOTSTRAP_DAYS * 86400
        listing = client.scheduling_requests(tql=f"scheduling_request.created_at GTE {since}")
    else:
        listing = client.scheduling_requests()
    floor = None if bootstrap else int(high_water) - OVERLAP_SECONDS
    for req in listing:
        seen[req.id] = req
        if floor is not None and req.created_at < floor:
            break
    for rid in [i for i in open_ids if i not in seen][:RECHECK_LIMIT]:
        seen[rid] = client.scheduling_request(rid)
    return seen, bootstrap


def poll_once(db: str, client: TimezestClient, enqueue: Callable[[int], None]) -> PollResult:
    run_id = _start(db)
    if run_id is None:
        return PollResult("busy")
    try:
        return _poll(db, client, enqueue, run_id)
    except (TimezestError, ValueError) as exc:
        _finish(db, run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
        log.warning("timezest.poll.failed", extra={"error": str(exc)[:200]})
        return PollResult("failed", error=str(exc))
    except Exception as exc:
        _finish(db, run_id, "failed", error=f"{type(exc).__name__}: {exc}"[:500])
        raise


def _poll(db: str, client: TimezestClient, enqueue: Callable[[int], None], run_id: int) -> PollResult:
    seen, bootstrap = _fetch(db, client)
    new_ids: list[int] = []
    recent = int(time.time()) - BOOTSTRAP_WINDOW_SECONDS
    now = utcnow()
    with session_scope(db) as s:
        known = {r.id: r for r in s.exec(
            select(TimezestRequest).where(col(TimezestRequest.id).in_(list(seen)))).all()}
        for req in seen.values():
            row = known.get(req.id)
            ticket = req.autotask_ticket
            changed = row is None or row.status != req.status
            etype = STATUS_EVENTS.get(req.status)
            if changed and etype is not None and not (bootstrap and req.updated_at < recent):
                external_id = f"{req.id}:{req.status}"
                exists = s.exec(select(InboundEvent.id).where(
                    InboundEvent.source == SOURCE, InboundEvent.external_id == external_id)).first()
                if exists is None:
                    ev = InboundEvent(
                        source=SOURCE, external_id=external_id, event_type=etype.value,
                        body=req.model_dump_json().encode(), headers={},
                        ticket_id=ticket.id if ticket else None, ticket_number=ticket.number if ticket else None,
                        occurred_at=req.changed_at(),
                    )
                    if ticket is None or (ticket.id is None and not ticket.number):
                        ev.state, ev.reason = EventState.IGNORED, "no-autotask-ticket"
                    s.add(ev)
                    s.flush()
                    if ev.state == EventState.ACCEPTED and ev.id is not None:
                        new_ids.append(ev.id)
            if row is None:
                row = TimezestRequest(id=req.id, status=req.status, created_at=req.created_at,
                                      updated_at=req.updated_at)
            row.status, row.updated_at, row.last_checked_at = req.status, req.updated_at, now
            row.ticket_id = ticket.id if ticket else None
            s.add(row)
        high_water = s.exec(select(func.max(TimezestRequest.created_at))).one()
    for event_id in new_ids:  # after the commit
        enqueue(event_id)
    _finish(db, run_id, "ok", seen=len(seen), emitted=len(new_ids), high_water=high_water)
    return PollResult("ok", seen=len(seen), emitted=new_ids)


def poll_from_settings(settings: Settings) -> int:
    if settings.timezest_api_key is None:
        return 0
    from pipelines.tasks import enqueue_event

    client = TimezestClient(api_key=settings.timezest_api_key.get_secret_value(),
                            base_url=settings.timezest_base_url)
    try:
        result = poll_once(settings.effective_database_url, client, enqueue_event)
    finally:
        client.close()
    return len(result.emitted or [])
