"""Is anything doing the work? The facts every screen shows, and the alerts they raise.

One function (:func:`assess`) reads, from the audit database only, what the dashboard's verdict,
``/readyz``, ``atrelay doctor``, ``/metrics`` and the liveness alerts all say, so they never disagree:

* ``no_worker``: no worker process has beaten within the heartbeat timeout (critical);
* ``workers_not_ready``: workers are alive but cannot do their work (Autotask refuses their
  credentials, or cannot be reached), critical when none is ready;
* ``no_beat``: no scheduler is alive: nothing sweeps, polls, reconciles or checks alerts (critical);
* ``stuck:<queue>``: the oldest event waiting in a queue has waited longer than
  ``ATRELAY_STUCK_AFTER_SECONDS`` (warning);
* ``timezest_overdue``, ``reconcile_overdue``: a poll has not run for twice its interval and a minute.

Queues: ``accepted`` (never run yet), ``retrying`` and ``parked`` (a retry that is due), ``processing``
(a run whose lease ran out: its worker died). A condition whose cause is already named is left out
(events stuck because no worker is alive are told in the no-worker alert, with the oldest one's age).

:func:`raise_alerts` turns changes into alerts: an incident opens once (``liveness_incidents``, a
conditional update, so of all the processes that see it the first records the alert) and its end is
told once as well.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func, or_, update
from sqlmodel import col, select

from pipelines.alert_text import Message
from pipelines.alerts import record_alert
from pipelines.audit import EventState, InboundEvent, LivenessIncident, PollRun
from pipelines.db import db_now, insert_for, session_scope
from pipelines.heartbeats import Alive, alive

__all__ = ["NAMES", "QUEUES", "Condition", "Liveness", "Waiting", "assess", "open_incidents", "raise_alerts",
           "waiting"]

QUEUES = ("accepted", "retrying", "parked", "processing")
NAMES = ("no_worker", "workers_not_ready", "no_beat", *(f"stuck:{q}" for q in QUEUES), "timezest_overdue",
         "reconcile_overdue")


@dataclass(frozen=True)
class Waiting:
    queue: str
    count: int
    oldest_seconds: float | None
    oldest_id: int | None = None


@dataclass(frozen=True)
class Condition:
    """Something wrong now: ``summary`` is one line (dashboard, doctor); ``todo`` what to do about it."""

    name: str
    severity: str
    title: str
    summary: str
    todo: str
    ready_key: str  # the /readyz problem it is filed under (a component name, nothing more)
    ready_text: str  # what /readyz says there: terse, no hosts


@dataclass
class Liveness:
    workers: Alive
    beat: Alive
    waiting: dict[str, Waiting]
    conditions: list[Condition] = field(default_factory=list)
    suppressed: set[str] = field(default_factory=set)  # names whose cause another condition already tells

    @property
    def oldest_waiting(self) -> Waiting | None:
        aged = [w for w in self.waiting.values() if w.oldest_seconds is not None]
        return max(aged, key=lambda w: w.oldest_seconds or 0.0, default=None)

    @property
    def waiting_line(self) -> str:
        total = sum(w.count for w in self.waiting.values())
        oldest = self.oldest_waiting
        if not total or oldest is None or oldest.oldest_seconds is None:
            return "no events waiting"
        return f"{total} event(s) waiting, the oldest for {_age(oldest.oldest_seconds)} ({oldest.queue})"

    @property
    def problems(self) -> dict[str, str]:
        """For /readyz: component -> terse reason (no hosts, no exception text)."""
        out: dict[str, str] = {}
        for c in self.conditions:
            out.setdefault(c.ready_key, c.ready_text)
        if "workers" in out:
            out.setdefault("waiting", self.waiting_line)
        return out


def _age(seconds: float) -> str:
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h {s % 3600 // 60} min"


def waiting(db: str, now: datetime) -> dict[str, Waiting]:
    """Per queue: how many events wait, and since when the oldest has (through the state index)."""
    due = or_(col(InboundEvent.not_before).is_(None), col(InboundEvent.not_before) <= now)
    since = {
        "accepted": (col(InboundEvent.state) == EventState.ACCEPTED,
                     func.coalesce(InboundEvent.horizon_from, InboundEvent.received_at)),
        "retrying": ((col(InboundEvent.state) == EventState.RETRYING) & due,
                     func.coalesce(InboundEvent.not_before, InboundEvent.updated_at)),
        "parked": ((col(InboundEvent.state) == EventState.PARKED) & due,
                   func.coalesce(InboundEvent.not_before, InboundEvent.updated_at)),
        "processing": ((col(InboundEvent.state) == EventState.PROCESSING) & (col(InboundEvent.lease_until) < now),
                       InboundEvent.lease_until),
    }
    out: dict[str, Waiting] = {}
    with session_scope(db) as s:
        for queue, (where, start) in since.items():
            count, oldest = s.exec(select(func.count(), func.min(start)).where(where)).one()
            first = _as_aware(oldest)
            out[queue] = Waiting(queue, int(count or 0),
                                 None if first is None else max(0.0, (now - first).total_seconds()))
    return out


def _as_aware(value: object) -> datetime | None:
    """min() over a coalesce comes back raw on SQLite (a naive UTC string or datetime)."""
    from datetime import UTC

    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    assert isinstance(value, datetime)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _last_poll(db: str, source: str) -> datetime | None:
    with session_scope(db) as s:
        return s.exec(select(PollRun.started_at).where(PollRun.source == source)
                      .order_by(col(PollRun.id).desc()).limit(1)).first()


def assess(db: str, *, heartbeat_timeout: float, stuck_after: float, timezest_poll_seconds: float | None = None,
           reconcile_seconds: float | None = None) -> Liveness:
    """The facts and the conditions they make, now (the database's clock)."""
    workers = alive(db, "worker", timeout_seconds=heartbeat_timeout)
    beat = alive(db, "beat", timeout_seconds=heartbeat_timeout)
    now = workers.now
    out = Liveness(workers, beat, waiting(db, now))
    add = out.conditions.append
    line = out.waiting_line
    if not workers.count:
        last = workers.newest
        seen = (f"last heartbeat {_age(workers.silent_for or 0)} ago from {last.host} pid {last.pid}"
                if last is not None else "none has run against this database")
        add(Condition("no_worker", "critical", "No atrelay worker is alive",
                      f"no worker alive ({seen}); {line}; nothing reaches Autotask until one runs",
                      "Start or restart `atrelay worker` (systemd: `systemctl restart atrelay-worker`; compose: "
                      "`docker compose up -d worker`) and read its log for why it stopped.",
                      "workers", "no worker alive"))
    elif not workers.ready:
        why = "; ".join(sorted({p.problem or "not ready" for p in workers.not_ready}))
        add(Condition("workers_not_ready", "critical", "atrelay workers are running but cannot work",
                      f"{workers.count} worker(s) alive, none ready: {why}; {line}",
                      "Fix what the line names (the worker retries by itself and releases the held events "
                      "once it works; restarting it with the fixed settings does too).",
                      "workers", "no worker ready"))
    elif workers.not_ready:
        why = "; ".join(sorted({p.problem or "not ready" for p in workers.not_ready}))
        add(Condition("workers_not_ready", "warning", "Some atrelay workers cannot work",
                      f"{len(workers.not_ready)} of {workers.count} worker(s) not ready: {why}",
                      "Fix what the line names on those hosts, or stop them.", "workers", "some workers not ready"))
    if not beat.count:
        last = beat.newest
        seen = (f"last heartbeat {_age(beat.silent_for or 0)} ago from {last.host} pid {last.pid}"
                if last is not None else "none has run against this database")
        add(Condition("no_beat", "critical", "No atrelay beat (scheduler) is alive",
                      f"no beat alive ({seen}): stuck events are not swept back, TimeZest is not polled, "
                      "Autotask is not reconciled, alerts are checked only by the ingress and workers",
                      "Start `atrelay beat` (systemd: `systemctl restart atrelay-beat`; embedded: `atrelay run` "
                      "runs it inside the worker).", "beat", "no beat alive"))
    working = bool(workers.ready)
    for queue, w in out.waiting.items():
        name = f"stuck:{queue}"
        if w.oldest_seconds is None or w.oldest_seconds <= stuck_after:
            continue
        if not working:
            out.suppressed.add(name)
            continue
        add(Condition(name, "warning", f"Events are waiting too long ({queue})",
                      f"{w.count} event(s) {queue}, the oldest for {_age(w.oldest_seconds)} "
                      f"(over {_age(stuck_after)})",
                      "Look at the worker logs and `atrelay events --state " + queue + "`; add workers "
                      "(`ATRELAY_WORKER_CONCURRENCY`) if they are busy, check Autotask's quota on the dashboard.",
                      "waiting", f"oldest waiting event {_age(w.oldest_seconds)} old"))
    for name, source, interval, what in (("timezest_overdue", "timezest", timezest_poll_seconds, "TimeZest poll"),
                                         ("reconcile_overdue", "autotask", reconcile_seconds,
                                          "Autotask reconciliation")):
        if interval is None:
            continue
        if not working or not beat.count:
            out.suppressed.add(name)
            continue
        started = min(p.started_at for p in beat.alive)
        polled = _last_poll(db, source)
        since = max(started, polled) if polled is not None else started
        late = (now - since).total_seconds()
        if late > 2 * interval + 60:
            add(Condition(name, "warning", f"The {what} is overdue",
                          f"the {what} last ran {_age(late)} ago (every {_age(interval)} expected)",
                          "Read the beat and worker logs (`atrelay polls` lists the polls and their errors).",
                          "polls", f"{what} overdue"))
    return out


def raise_alerts(db: str, state: Liveness) -> list[int]:
    """Open an incident (and record its alert) for each new condition; close (and tell) those that ended."""
    now = db_now(db)
    # When these facts were read. Every process looks on its own beat, so a look taken just before a
    # worker came back can arrive just after another process closed the incident: it must not reopen
    # it (a second "no worker" alert for one outage), nor may a look older than an opening close it.
    seen = state.workers.now
    present = {c.name: c for c in state.conditions}
    made: list[int | None] = []
    for name in NAMES:
        cond = present.get(name)
        if cond is not None:
            opened = _open(db, name, now, cond.summary, seen)
            if opened is not None:
                made.append(record_alert(
                    db, kind="liveness", key=f"liveness:{name}:{opened:%Y%m%dT%H%M%S%f}", message=Message(
                        title=cond.title, severity=cond.severity, happened=cond.summary, todo=cond.todo,
                        facts=[("Waiting", state.waiting_line)] if name in ("no_worker", "workers_not_ready") else []),
                    fields={"kind": "liveness", "condition": name}))
        elif name not in state.suppressed:
            was = _close(db, name, now, seen)
            if was is not None:
                made.append(record_alert(
                    db, kind="liveness", key=f"liveness:{name}:{was:%Y%m%dT%H%M%S%f}:cleared", message=Message(
                        title=f"Resolved: {name.replace('_', ' ')}", severity="info",
                        happened=f"The condition that began at {was:%Y-%m-%d %H:%M:%S} UTC has ended "
                                 f"({state.waiting_line}).", todo="Nothing."),
                    fields={"kind": "liveness", "condition": name, "cleared": True}))
    return [m for m in made if m is not None]


def _open(db: str, name: str, now: datetime, detail: str, seen: datetime) -> datetime | None:
    """Open the incident unless it is open, or was closed on facts newer than ``seen``; return its start
    when this call opened it."""
    with session_scope(db) as s:
        dialect = s.get_bind().dialect.name
        # RETURNING, not rowcount: psycopg reports no reliable rowcount for ON CONFLICT DO NOTHING.
        fresh = s.execute(insert_for(dialect)(LivenessIncident).values(name=name, opened_at=now, detail=detail[:2000])
                          .on_conflict_do_nothing().returning(LivenessIncident.name)).first()
        if fresh is not None:
            return now
        reopened = s.execute(update(LivenessIncident).where(
            col(LivenessIncident.name) == name, col(LivenessIncident.cleared_at).is_not(None),
            col(LivenessIncident.cleared_at) <= seen)
            .values(opened_at=now, cleared_at=None, detail=detail[:2000])).rowcount  # type: ignore[attr-defined]
    return now if reopened else None


def _close(db: str, name: str, now: datetime, seen: datetime) -> datetime | None:
    """Close the incident if open since before ``seen``; return when it had opened (for the alert's key)
    when this call closed it."""
    with session_scope(db) as s:
        row = s.get(LivenessIncident, name)
        if row is None or row.cleared_at is not None or row.opened_at > seen:
            return None
        closed = s.execute(update(LivenessIncident).where(
            col(LivenessIncident.name) == name, col(LivenessIncident.opened_at) == row.opened_at,
            col(LivenessIncident.cleared_at).is_(None)).values(cleared_at=now)).rowcount  # type: ignore[attr-defined]
    return row.opened_at if closed else None


def open_incidents(db: str) -> list[LivenessIncident]:
    with session_scope(db) as s:
        return list(s.exec(select(LivenessIncident).where(col(LivenessIncident.cleared_at).is_(None))).all())

