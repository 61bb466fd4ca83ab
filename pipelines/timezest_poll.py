"""The TimeZest poll's stateful half: poll runs, what was seen last, and recording the events owed.

TimeZest has no webhooks. Each poll lists requests newest-first down to the high-water mark (the
newest ``created_at`` we know, less an overlap), then the watched requests (appointment still ahead,
or changed in the last 30 days: one TQL listing, :func:`connectors.timezest.diff.watch_filter`), so
a booking cancelled or moved weeks after it was made is seen. If TimeZest refuses that filter (its
``updated_at`` support is unverified) the poll re-reads the requests it watches by id instead.
Requests last seen ``new`` or ``sent`` and missing from both listings are re-read by id as well.
:func:`connectors.timezest.diff.diff` says which changes are events. All HTTP is done
before the one database commit, so a failed poll changes nothing and the next catches up. Events
go through the shared intake path (recorded, committed, then enqueued).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import func, or_
from sqlmodel import col, select

from connectors.timezest.client import TimezestClient, TimezestError
from connectors.timezest.diff import WATCH_DAYS, Known, diff, listing_floor, watch_filter
from connectors.timezest.parse import SchedulingRequest, occurred_at
from pipelines import intake, store
from pipelines.audit import EventState, PollRun, TimezestRequest
from pipelines.db import session_scope, utcnow

__all__ = ["PollResult", "poll_once"]

log = logging.getLogger("atrelay.timezest")
SOURCE = "timezest"
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


def _watched_ids(db: str, now: int) -> tuple[list[str], list[str]]:
    """Ids to re-read when a listing missed them: (open requests, booked ones still watched),
    least recently checked first."""
    with session_scope(db) as s:
        open_ids = list(s.exec(
            select(TimezestRequest.id).where(col(TimezestRequest.status).in_(_OPEN))
            .order_by(col(TimezestRequest.last_checked_at)).limit(RECHECK_LIMIT * 10)
        ).all())
        booked = list(s.exec(
            select(TimezestRequest.id).where(
                TimezestRequest.status == "scheduled",
                or_(col(TimezestRequest.selected_start_time) >= now,
                    col(TimezestRequest.updated_at) >= now - WATCH_DAYS * 86400))
            .order_by(col(TimezestRequest.last_checked_at)).limit(RECHECK_LIMIT * 10)
        ).all())
    return open_ids, booked


def _fetch(db: str, client: TimezestClient) -> tuple[dict[str, SchedulingRequest], bool]:
    now = int(time.time())
    with session_scope(db) as s:
        high_water = s.exec(select(func.max(TimezestRequest.created_at))).one()
    open_ids, booked_ids = _watched_ids(db, now)
    bootstrap = high_water is None
    seen: dict[str, SchedulingRequest] = {}
    if bootstrap:
        since = int(time.time()) - BOOTSTRAP_DAYS * 86400
        listing = client.scheduling_requests(tql=f"scheduling_request.created_at GTE {since}")
    else:
        listing = client.scheduling_requests()
    floor = listing_floor(high_water)
    for req in listing:
        seen[req.id] = req
        if floor is not None and req.created_at < floor:
            break
    recheck = open_ids
    try:
        for req in client.scheduling_requests(tql=watch_filter(now)):
            seen[req.id] = req
    except TimezestError as exc:
        if exc.retryable:
            raise  # TimeZest is down or limiting: the whole poll fails and the next catches up
        # The filter itself was refused: read what we watch one by one (bounded per poll).
        log.warning("timezest.watch_filter_refused", extra={"error": str(exc)[:200]})
        recheck = open_ids + booked_ids
    for rid in [i for i in recheck if i not in seen][:RECHECK_LIMIT]:
        seen[rid] = client.scheduling_request(rid)
    return seen, bootstrap


def poll_once(db: str, client: TimezestClient, enqueue: intake.Enqueue) -> PollResult:
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


def _poll(db: str, client: TimezestClient, enqueue: intake.Enqueue, run_id: int) -> PollResult:
    seen, bootstrap = _fetch(db, client)
    new_ids: list[int] = []
    now = utcnow()
    with session_scope(db) as s:
        known = {r.id: r for r in s.exec(
            select(TimezestRequest).where(col(TimezestRequest.id).in_(list(seen)))).all()}
        changes = diff({rid: Known(row.status, row.selected_start_time) for rid, row in known.items()},
                       seen.values(), bootstrap=bootstrap,
                       recent_cutoff=int(time.time()) - BOOTSTRAP_WINDOW_SECONDS)
        for change in changes:
            req, ticket = change.request, change.request.autotask_ticket
            event_id = intake.record_in(s, store.NewEvent(
                source=SOURCE, external_id=change.external_id, event_type=change.event_type.value,
                body=req.model_dump_json().encode(), headers={},
                ticket_id=ticket.id if ticket else None, ticket_number=ticket.number if ticket else None,
                occurred_at=occurred_at(req, change.event_type),
                state=EventState.IGNORED if change.ticketless else EventState.ACCEPTED,
                reason="no-autotask-ticket" if change.ticketless else None,
            ))
            if event_id is not None:
                new_ids.append(event_id)
        for req in seen.values():
            row = known.get(req.id) or TimezestRequest(id=req.id, status=req.status, created_at=req.created_at,
                                                       updated_at=req.updated_at)
            ticket = req.autotask_ticket
            row.status, row.updated_at, row.last_checked_at = req.status, req.updated_at, now
            row.selected_start_time = req.selected_start_time
            row.ticket_id = ticket.id if ticket else None
            s.add(row)
        high_water = s.exec(select(func.max(TimezestRequest.created_at))).one()
    intake.enqueue_committed(enqueue, new_ids)  # after the commit
    _finish(db, run_id, "ok", seen=len(seen), emitted=len(new_ids), high_water=high_water)
    return PollResult("ok", seen=len(seen), emitted=new_ids)
