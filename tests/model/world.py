"""One model example's world, reused across examples: the sandbox server, an audit database, the wires.

Kept apart from the state machine so the regression tests of shrunk examples drive the same world.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import time_machine
from sqlalchemy import text, update
from sqlmodel import col, select

from connectors.autotask.callouts import dedupe_key, parse_callout
from connectors.common.events import Source
from pipelines import db as db_module
from pipelines import store
from pipelines.audit import EventState, InboundEvent, TicketState
from pipelines.context import Context
from pipelines.db import engine_for, session_scope
from pipelines.invalid import check_webhook
from pipelines.process import process_event
from pipelines.reconcile import reconcile_once
from pipelines.registry import WEBHOOKS
from pipelines.schema import upgrade
from pipelines.sweeper import sweep
from sandboxes.autotask.app import create_app
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.conftest import DATA_TABLES
from tests.model.harness import (
    MC_NO_CONTACT,
    OUT_OF_SCOPE,
    SCHEDULED,
    SCHEDULING_LINK_SENT,
    SENT_FROM_MC,
    Violation,
    Wire,
    Witness,
    WorkerDied,
    make_context,
    parse_time,
)

__all__ = ["MC_TYPES", "TimezestMove", "World", "shared_world"]

MC = SANDBOX_RESOURCES["mission_control"]
MC_TYPES = {"mc.escalated": SENT_FROM_MC, "mc.out_of_scope": OUT_OF_SCOPE, "mc.no_contact": MC_NO_CONTACT}
#: The statuses a reconciliation treats as news on first sight (the watch rules' and guards').
WATCHED = {SENT_FROM_MC, OUT_OF_SCOPE, MC_NO_CONTACT, 5, 7, 29682836}
#: Every example starts at this moment on the world's clock, which stands still within a step and
#: moves on by STEP between steps: the same example sees the same times, so a failure replays exactly
#: (same-second ties included) and Hypothesis can shrink it.
START = datetime(2030, 1, 7, 9, 0, 0, 250_000, tzinfo=UTC)
STEP = timedelta(milliseconds=700)
#: Read at import: the tests' autouse fixture clears ATRELAY_* variables before each test runs.
MODEL_DB = os.environ.get("ATRELAY_MODEL_DB", "")


def iso_ms(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


@dataclass
class Pending:
    """A callout Autotask has to send (built when the change happened)."""

    key: str
    body: bytes
    ticket: int
    note: bool


@dataclass
class TimezestMove:
    """One move of a TimeZest request, and what TimeZest's own PSA actions wrote for it."""

    event_id: int
    kind: str
    psa: bool
    set_status: int | None = None  # the status TimeZest set for it (None: none)
    changed: bool = False  # ... and the ticket's status changed by it
    #: With its PSA actions on, TimeZest noted it: the facts (atrelay's detail labels) its note leaves out.
    unsaid: frozenset[str] = frozenset()


@dataclass
class World:
    db: str
    state: SandboxState
    url: str
    witness: Witness
    wire: Wire = field(default_factory=Wire)
    queue: list[int] = field(default_factory=list)
    pending: list[Pending] = field(default_factory=list)
    #: partner report -> (how to find the events atrelay recorded for it, the atrelay notes it owes)
    reports: dict[str, tuple[Callable[[], set[int]], int]] = field(default_factory=dict)
    timezest_moves: list[TimezestMove] = field(default_factory=list)
    #: signed webhooks delivered so far (source, body, webhook-id): a sender may send one again
    sent: list[tuple[Source, bytes, str]] = field(default_factory=list)
    reconciled: bool = False
    crashes: int = 0
    steps: int = 0
    ctx: Context | None = None
    other: Context | None = None
    clock: Any = None
    traveller: Any = None

    # ---- per example ----------------------------------------------------------------------------
    def fresh(self) -> None:
        self.stop_clock()
        self.clock = time_machine.travel(START, tick=False)
        self.traveller = self.clock.start()
        # One clock for the world: the database's own clock (PostgreSQL's, for leases) is not asked;
        # db_now is then the world's clock (zero offset, never re-measured).
        db_module._clock_offsets[self.db] = (0.0, float("inf"))
        self.state.reset()
        self.witness.reset()
        self.wire = Wire()
        self.queue, self.pending, self.reports, self.timezest_moves, self.sent = [], [], {}, [], []
        self.reconciled, self.crashes, self.steps = False, 0, 0
        with engine_for(self.db).begin() as conn:
            if self.db.startswith("postgresql"):
                conn.execute(text(f"TRUNCATE {', '.join(DATA_TABLES)} RESTART IDENTITY CASCADE"))
            else:
                for table in reversed(DATA_TABLES):
                    conn.execute(text(f"DELETE FROM {table}"))
        self.ctx = make_context(self.db, self.url, self.wire, enqueue=lambda i, _c: self.queue.append(i))
        self.other = make_context(self.db, self.url, Wire(), enqueue=lambda i, _c: self.queue.append(i))

    def tick(self) -> None:
        """The world's clock moves on between steps."""
        if self.traveller is not None:
            self.traveller.shift(STEP)

    def stop_clock(self) -> None:
        if self.clock is not None:
            self.clock.stop()
        self.clock = self.traveller = None

    # ---- partners -------------------------------------------------------------------------------
    def webhook(self, source: Source, body: dict[str, Any]) -> int:
        """What the ingress records for a signed webhook (after its signature: the same checks, same clamp)."""
        raw = json.dumps(body).encode()
        webhook_id = f"msg_{uuid.uuid4().hex}"
        event_id, created = self._record(source, raw, webhook_id)
        assert created
        self.sent.append((source, raw, webhook_id))
        self.queue.append(event_id)
        return event_id

    def webhook_again(self, pick: int) -> None:
        """A sender that got no answer in time sends a delivery again (same webhook-id, same body), at any
        later moment: intake must know it, and it must never become a second event (a second note)."""
        source, raw, webhook_id = self.sent[pick % len(self.sent)]
        event_id, created = self._record(source, raw, webhook_id)
        if created:
            raise Violation(f"(b) delivery {webhook_id} sent again became a second event #{event_id}")

    def _record(self, source: Source, raw: bytes, webhook_id: str) -> tuple[int, bool]:
        valid = check_webhook(WEBHOOKS[source], raw, webhook_id, datetime.now(UTC), 300)
        headers = {"x-atrelay-clamped-from": valid.clamped_from.isoformat()} if valid.clamped_from else {}
        return store.insert_event(self.db, store.NewEvent(
            source=source.value, external_id=webhook_id, event_type=valid.event_type, body=raw, headers=headers,
            ticket_id=valid.ticket_id, ticket_number=valid.ticket_number, occurred_at=valid.occurred_at))

    def change_status(self, ticket: int, status: int, who: str) -> datetime | None:
        """A status change in Autotask by ``who``; its callout is pending. None if it changed nothing."""
        if self.state.tickets[ticket]["status"] == status:
            return None
        self.state.set_status(ticket, status, actor=who)
        at = parse_time(self.state.history[-1]["at"])
        person = self.state.actor(who).resource_id
        body = {"Action": "Update", "Guid": "model-hook", "EntityType": "Ticket", "Id": ticket,
                "SequenceNumber": len(self.state.history), "EventTime": iso_ms(at), "PersonID": person,
                "Fields": {"Status": status, "TicketNumber": self.state.tickets[ticket]["ticketNumber"]}}
        raw = json.dumps(body).encode()
        self.pending.append(Pending(dedupe_key(parse_callout(raw), raw), raw, ticket, note=False))
        return at

    def email_form(self, ticket: int) -> int:
        """The new-user form e-mailed into the ticket: a contact's note; its note callout is pending."""
        note = self.state.add_note(ticket, {"title": f"New User Form for ticket {ticket}", "description":
                                            "First name: Sam\nStart date: Monday", "noteType": 13, "publish": 1},
                                   self.state.actor("contact"))
        body = {"Action": "Create", "Guid": "model-note-hook", "EntityType": "TicketNote", "Id": note["id"],
                "SequenceNumber": note["id"], "EventTime": note["createDateTime"], "PersonID": None,
                "Fields": {"TicketID": ticket, "Title": note["title"]}}
        raw = json.dumps(body).encode()
        self.pending.append(Pending(dedupe_key(parse_callout(raw), raw), raw, ticket, note=True))
        return int(note["id"])

    def timezest(self, ticket: int, kind: str, psa: bool, *, terse: bool = False,
                 cancel_status: int | None = None) -> TimezestMove:
        """TimeZest moves a scheduling request for the ticket: ``sent``, ``scheduled``, ``cancelled`` (a
        booked appointment), ``cancelled-unbooked`` (a request nobody booked) or ``rescheduled``. With its
        PSA actions on, it first sets its status (``cancel_status`` for a cancellation; none for a
        reschedule) and writes its note, as its own API resource; its note names the appointment's time
        in UTC, unless ``terse`` (then a cancellation's or reschedule's note leaves the time and the agent
        out). The poller's event for the move is recorded as the poller would (connectors.timezest.parse)."""
        now = int(datetime.now(UTC).timestamp())
        booked = kind in ("scheduled", "cancelled", "rescheduled")
        start = now + 86400 if booked else None
        when = datetime.fromtimestamp(start, tz=UTC).strftime("%a %Y-%m-%d %H:%M UTC") if start else None
        status = {"sent": SCHEDULING_LINK_SENT, "scheduled": SCHEDULED}.get(kind, cancel_status
                                                                            if kind.startswith("cancelled") else None)
        move = TimezestMove(0, kind, psa)
        if psa:
            if status is not None:
                move.set_status = status
                move.changed = self.change_status(ticket, status, "timezest") is not None
            later = None if terse else when
            text = {"sent": "TimeZest sent a scheduling link to Jane Example.",
                    "scheduled": f"Jane Example booked {when} with Tech One (TimeZest).",
                    "cancelled": f"The TimeZest appointment{f' of {later}' if later else ''} was cancelled.",
                    "cancelled-unbooked": "The TimeZest scheduling request was cancelled.",
                    "rescheduled": f"Jane Example moved the TimeZest appointment"
                                   f"{f' to {later} with Tech One' if later else ''}."}[kind]
            self.state.add_note(ticket, {"title": f"TimeZest: scheduling request {kind.partition('-')[0]}",
                                         "description": text, "noteType": 2, "publish": 1},
                                self.state.actor("timezest"))
            move.unsaid = frozenset({"cancelled": {"Cancelled appointment"}, "rescheduled": {"New appointment", "With"}}
                                    .get(kind, set()) if terse else set())
        rid = f"sreq_MODEL{uuid.uuid4().hex[:8]}"
        body = {"id": rid, "status": "scheduled" if kind == "rescheduled" else kind.partition("-")[0],
                "associated_entities": [{"type": "autotask/ticket", "id": ticket}],
                "end_user_name": "Jane Example", "created_at": now - 3600, "updated_at": now,
                "scheduled_at": (now if kind == "scheduled" else now - 600) if booked else None,
                "selected_start_time": start,
                "scheduled_agents": [{"id": "agnt_MODEL", "name": "Tech One"}] if booked else []}
        etype = {"sent": "link_sent", "cancelled-unbooked": "cancelled"}.get(kind, kind)
        event_id, created = store.insert_event(self.db, store.NewEvent(
            source=Source.TIMEZEST.value, external_id=f"{rid}:{kind}", event_type=f"timezest.{etype}",
            body=json.dumps(body).encode(), headers={}, ticket_id=ticket,
            occurred_at=datetime.fromtimestamp(now, tz=UTC)))
        assert created
        self.queue.append(event_id)
        move.event_id = event_id
        self.timezest_moves.append(move)
        return move

    def deliver(self, index: int) -> None:
        """Autotask delivers a pending callout (a repeat is the same callout: one event at intake)."""
        call = self.pending[index]
        event_id, created = store.insert_event(self.db, store.NewEvent(
            source=Source.AUTOTASK.value, external_id=call.key,
            event_type="autotask.note.added" if call.note else "autotask.ticket.changed", body=call.body,
            headers={}, ticket_id=call.ticket, occurred_at=parse_callout(call.body).event_time))
        if created:
            self.queue.append(event_id)

    # ---- atrelay ----------------------------------------------------------------------------------
    def run(self, index: int, faults: list[tuple[str, str, str]], scripted: list[dict[str, Any]],
            pause: bool = False) -> None:
        """A worker takes the ``index``-th queued delivery and runs it, with faults planned for this run."""
        assert self.ctx is not None and self.other is not None
        event_id = self.queue.pop(index)
        self.wire.plan = list(faults)
        self.state.script = [dict(f) for f in scripted]
        if pause:
            self.wire.plan.append(("PATCH", "/tickets", "pause"))
            self.wire.on_pause = lambda: self._take_over(event_id)
        try:
            with self.witness.acting_for(event_id):
                result = process_event(self.ctx, event_id, task_id=f"t{self.steps}", worker="model")
            if result.retry_in is not None:
                self.queue.append(event_id)
        except WorkerDied:
            self.crashes += 1  # its leases are left to run out (see time_passes)
        finally:
            self.wire.plan, self.wire.on_pause, self.state.script = [], None, []

    def _take_over(self, event_id: int) -> None:
        """This worker slept past its lease; another took the event and ran it to the end meanwhile."""
        assert self.other is not None
        self._expire(event_id)
        result = process_event(self.other, event_id, task_id="other", worker="other")
        if result.retry_in is not None:
            self.queue.append(event_id)

    def _expire(self, event_id: int | None = None) -> None:
        past = datetime.now(UTC) - timedelta(seconds=1)
        with session_scope(self.db) as s:
            q = update(InboundEvent).where(col(InboundEvent.state) == EventState.PROCESSING)
            if event_id is not None:
                q = q.where(col(InboundEvent.id) == event_id)
            s.execute(q.values(lease_until=past))
            s.execute(update(TicketState).where(col(TicketState.lease_until).is_not(None)).values(lease_until=past))

    def time_passes(self) -> None:
        """Leases of dead workers run out, retry pauses end, and beat's sweeper re-queues what is owed."""
        self._expire()
        with session_scope(self.db) as s:
            s.execute(update(InboundEvent).where(col(InboundEvent.not_before).is_not(None)).values(not_before=None))
        self.queue.extend(sweep(self.db, stale_after=timedelta(seconds=0)))

    def reconcile(self) -> None:
        assert self.ctx is not None
        result = reconcile_once(self.db, self.ctx.client, self.queue.append, watched_status_ids=WATCHED,
                                own_resource_id=SANDBOX_RESOURCES["atrelay"])
        self.reconciled = self.reconciled or result.outcome in ("baseline", "ok")

    def drain(self) -> None:
        """The end of the day: no more faults; every owed event runs until nothing is owed."""
        for _ in range(40):
            self.tick()
            self.time_passes()
            owed = self.unfinished()
            if not owed and not self.queue:
                return
            self.queue = sorted(set(self.queue) | set(owed))
            while self.queue:
                self.run(0, [], [])
        raise AssertionError(f"events still unfinished after the drain: {self.unfinished()}")

    # ---- what atrelay recorded (inputs only: the events, never their outcomes) ----------------------
    def unfinished(self) -> list[int]:
        with session_scope(self.db) as s:
            rows = s.exec(select(InboundEvent.id, InboundEvent.state)).all()
        return [i for i, st in rows if i is not None and not EventState(st).final]

    def occurred(self, event_id: int) -> datetime | None:
        row = store.get_event(self.db, event_id)
        return row.occurred_at if row is not None else None

    def derived(self, event_type: str, ticket: int, at: datetime) -> set[int]:
        """Events atrelay derived from what it saw in Autotask: this type, this ticket, this change's time."""
        with session_scope(self.db) as s:
            rows = s.exec(select(InboundEvent.id, InboundEvent.occurred_at).where(
                InboundEvent.source == Source.AUTOTASK.value, InboundEvent.event_type == event_type,
                InboundEvent.ticket_id == ticket)).all()
        return {i for i, when in rows if i is not None and when is not None and abs((when - at).total_seconds()) < 0.002}

    def escalation_reports(self) -> list[tuple[int, int, int, datetime, bool]]:
        """Every report of an MC escalation atrelay recorded: (id, ticket, status, when, by webhook?)."""
        with session_scope(self.db) as s:
            rows = s.exec(select(InboundEvent.id, InboundEvent.ticket_id, InboundEvent.event_type,
                                 InboundEvent.occurred_at, InboundEvent.source).where(
                col(InboundEvent.event_type).in_(list(MC_TYPES)))).all()
        return [(i, t, MC_TYPES[kind], when, source == Source.MISSION_CONTROL.value)
                for i, t, kind, when, source in rows if i is not None and t is not None and when is not None]

    def derived_from_note(self, note_id: int) -> set[int]:
        with session_scope(self.db) as s:
            rows = s.exec(select(InboundEvent.id, InboundEvent.body).where(
                InboundEvent.source == Source.AUTOTASK.value, InboundEvent.event_type == "form.submitted")).all()
        return {i for i, body in rows if i is not None and json.loads(body).get("note_id") == note_id}

    def final_rows(self) -> list[InboundEvent]:
        with session_scope(self.db) as s:
            return list(s.exec(select(InboundEvent)).all())


_shared: list[World] = []


def shared_world() -> World:
    """One world per test process: the sandbox server and the audit database are made once."""
    if _shared:
        return _shared[0]
    state = SandboxState()
    server = ThreadedServer(create_app(state)).start()
    witness = Witness(state)
    db = MODEL_DB
    if not db:
        # tmpfs when there is one: the model commits thousands of small transactions per minute.
        base = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
        folder = Path(tempfile.mkdtemp(prefix="atrelay-model-", dir=base))
        db = f"sqlite:///{folder / 'audit.db'}"
    upgrade(db)
    world = World(db, state, server.url, witness)
    _shared.append(world)
    return world
