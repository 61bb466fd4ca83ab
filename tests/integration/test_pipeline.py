"""The pipeline against the Autotask sandbox and a real audit DB (SQLite and PostgreSQL).

Covers the event's path end to end (docs/architecture.md) and the crash-replay guarantee: a run that dies after the PATCH, after the
note, or before the audit commit can be run again and writes no second status change and no second note.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from pipelines import store
from pipelines.audit import EventState, InboundEvent, OutboundAttempt, PipelineRun
from pipelines.db import session_scope
from pipelines.process import _Run, process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import Queue, add_event, make_context, mc_body, webform_body

RECEIVED_FORM = 29682844
MC_NO_CONTACT, WAITING_CUSTOMER = 29682847, 7
COMPLETE = 5


class Crash(BaseException):
    """Stands for the process dying: not an Exception, so nothing in the pipeline catches it."""


def expire_lease(db: str, event_id: int) -> None:
    """What the passing of the lease time does for a run whose worker died."""
    with session_scope(db) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id)
                  .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))


def runs(db: str, event_id: int) -> list[PipelineRun]:
    with session_scope(db) as s:
        return list(s.exec(select(PipelineRun).where(PipelineRun.event_id == event_id)).all())


def test_webform_applies_status_and_one_note(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id, task_id="t1", worker="w1")
    assert result.state == "applied"
    ticket = sandbox.tickets[50001]
    assert ticket["status"] == RECEIVED_FORM
    notes = [n for n in sandbox.notes.values() if n["ticketID"] == 50001]
    assert len(notes) == 1
    text = notes[0]["description"]
    for needle in ("from New to Received Form Response", "> Submitted by: Jane Example <jane@example.com>",
                   "First name: Sam", f"atrelay event #{event_id}", "[atrelay:event:"):
        assert needle in text
    assert (notes[0]["noteType"], notes[0]["publish"]) == (2, 1)  # picklist defaults
    (run,) = runs(db_url, event_id)
    assert (run.outcome, run.from_status, run.to_status, run.decision) == (
        "applied", "New", "Received Form Response", "transition")
    with session_scope(db_url) as s:
        attempts = list(s.exec(select(OutboundAttempt).where(OutboundAttempt.event_id == event_id)).all())
        row = s.get(InboundEvent, event_id)
    assert {(a.method, a.status_code) for a in attempts} >= {("PATCH", 200), ("POST", 200)}
    assert row is not None and row.state == "applied" and row.ticket_id == 50001
    # Running the same event again is a no-op.
    assert process_event(ctx, event_id).state == "applied"
    assert len(sandbox.history) == 1 and len(sandbox.notes) == 1


def test_already_set_writes_its_note_once_and_no_patch(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The status is already right (set by someone else): the event's information still reaches the
    ticket as one note, the status is not written again."""
    url, sandbox = autotask
    sandbox.set_status(50001, RECEIVED_FORM, actor="timezest")
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert (result.state, result.reason) == ("applied", "already-set: note only")
    (note,) = sandbox.notes.values()
    assert note["title"].startswith("Status confirmed: Received Form Response")
    assert "First name: Sam" in note["description"]
    assert [h["actor"] for h in sandbox.history] == ["timezest"]
    assert sandbox.calls["PATCH tickets"] == 0
    assert process_event(ctx, event_id).state == "applied"  # a re-run writes nothing more
    assert len(sandbox.notes) == 1


def test_already_set_without_a_note_rule_is_skipped(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    from connectors.common.events import EventType
    from pipelines.rules import DEFAULT_RULES, Rule

    url, sandbox = autotask
    sandbox.set_status(50001, RECEIVED_FORM, actor="timezest")
    rules = dict(DEFAULT_RULES)
    rules[EventType.FORM_SUBMITTED] = Rule("Received Form Response", note=False)
    ctx = make_context(db_url, url, rules=rules)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert (result.state, result.reason) == ("skipped", "already-set")
    assert sandbox.notes == {} and sandbox.calls["PATCH tickets"] == 0


def test_unknown_ticket_number_is_dead_with_reason(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body("T19990101.0001"))
    result = process_event(ctx, event_id)
    assert result.state == "dead"
    assert result.reason is not None and result.reason.startswith("ticket-not-found")
    assert store.get_event(db_url, event_id).reason.startswith("ticket-not-found")  # type: ignore[union-attr]


def test_unknown_status_label_is_dead_naming_the_labels(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    from connectors.common.events import EventType
    from pipelines.rules import DEFAULT_RULES, Rule

    url, _ = autotask
    rules = dict(DEFAULT_RULES)
    rules[EventType.FORM_SUBMITTED] = Rule("Form Received")
    ctx = make_context(db_url, url, rules=rules)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert result.state == "dead" and result.reason is not None
    assert "unknown-status" in result.reason and "'Received Form Response'" in result.reason


@pytest.mark.parametrize("status", [429, 503])
def test_retryable_error_schedules_a_retry(db_url: str, autotask: tuple[str, SandboxState], status: int) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    ctx.lists()  # picklists loaded; the fault hits the ticket read
    sandbox.script = [{"status": status, "retry_after": 3, "errors": ["busy"] if status == 429 else None}]
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert (result.state, result.retry_in) == ("retrying", 3.0)
    row = store.get_event(db_url, event_id)
    assert row is not None and row.state == "retrying" and row.not_before is not None
    # Not runnable before its time; runnable (and applied) after.
    assert process_event(ctx, event_id).state == "not-yet"
    with session_scope(db_url) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(not_before=None))
    assert process_event(ctx, event_id).state == "applied"
    assert [r.outcome for r in runs(db_url, event_id)] == ["retry", "applied"]


def test_long_waits_are_parked_for_the_sweeper(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    from pipelines.sweeper import sweep

    url, sandbox = autotask
    queue = Queue()
    ctx = make_context(db_url, url, enqueue=queue)
    ctx.lists()
    sandbox.script = [{"status": 429, "retry_after": 120, "errors": ["API request threshold exceeded"]}]
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert (result.state, result.retry_in) == ("parked", None)  # nothing waits on the broker
    row = store.get_event(db_url, event_id)
    assert row is not None and row.state == "parked" and (row.reason or "").startswith("autotask-rate-limited")
    assert sweep(db_url) == []  # not due yet
    with session_scope(db_url) as s:  # two minutes pass
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id)
                  .values(updated_at=datetime.now(UTC) - timedelta(seconds=121),
                          not_before=datetime.now(UTC) - timedelta(seconds=1)))
    assert sweep(db_url) == [event_id]  # due: swept back at once
    assert process_event(ctx, event_id).state == "applied"


def test_retries_end_in_dead_letter_past_the_horizon(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, retry_horizon_hours=1)
    ctx.lists()
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    with session_scope(db_url) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id)
                  .values(received_at=datetime.now(UTC) - timedelta(minutes=59, seconds=58)))
    sandbox.script = [{"status": 503}]
    result = process_event(ctx, event_id)
    assert result.state == "dead"
    assert result.reason is not None and result.reason.startswith("retries-exhausted after 1 attempts")
    assert "autotask-unavailable" in result.reason


def test_replay_of_a_dead_letter_writes_once(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body("T20261126.0099"))
    assert process_event(ctx, event_id).state == "dead"  # no such ticket yet
    sandbox.tickets[50099] = {**sandbox.tickets[50001], "id": 50099, "ticketNumber": "T20261126.0099", "status": 1}
    assert store.replay(db_url, event_id) == (True, f"event #{event_id} queued again (replay 1)")
    assert store.replay(db_url, event_id)[0] is False  # accepted now, not replayable twice
    assert process_event(ctx, event_id).state == "applied"
    assert store.replay(db_url, event_id) == (False, f"event #{event_id} is applied; only dead, skipped or ignored events are replayed")
    assert len(sandbox.notes) == 1 and len(sandbox.history) == 1


def _crash_once(monkeypatch: pytest.MonkeyPatch, target: Any, name: str, after: bool) -> None:
    original = getattr(target, name)
    state = {"done": False}

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if state["done"]:
            return original(*args, **kwargs)
        state["done"] = True
        if after:
            original(*args, **kwargs)
        raise Crash(f"process died {'after' if after else 'before'} {name}")

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize("point", ["after-patch", "after-note", "before-audit-commit"])
def test_crash_and_rerun_writes_nothing_twice(
    db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch, point: str
) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    if point == "after-patch":
        _crash_once(monkeypatch, ctx.client, "set_ticket_status", after=True)
    elif point == "after-note":
        _crash_once(monkeypatch, ctx.client, "add_ticket_note", after=True)
    else:
        _crash_once(monkeypatch, store, "finish_run", after=False)
    with pytest.raises(Crash):
        process_event(ctx, event_id)
    assert store.get_event(db_url, event_id).state == "processing"  # type: ignore[union-attr]
    # Another delivery while the lease holds does nothing.
    assert process_event(ctx, event_id).state == "leased"
    expire_lease(db_url, event_id)
    store.release_ticket(db_url, 50001, event_id)
    result = process_event(ctx, event_id)
    assert result.state == "applied"
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM
    assert len([h for h in sandbox.history if h["to"] == RECEIVED_FORM]) == 1
    assert len(sandbox.notes) == 1
    assert [r.outcome for r in runs(db_url, event_id)] == [None, "applied"]


def test_crash_after_note_recovers_note_id_by_marker(
    db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    _crash_once(monkeypatch, ctx.client, "add_ticket_note", after=True)
    with pytest.raises(Crash):
        process_event(ctx, event_id)
    expire_lease(db_url, event_id)
    process_event(ctx, event_id)
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.note_id == next(iter(sandbox.notes))
    assert sandbox.calls["POST ticketnotes/query"] == 1


def test_crash_after_a_huge_note_still_finds_it_by_marker(
    db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over 32,000 characters of answers: the note is cut, its marker is not, a re-run writes no second."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, note_key="deployment-secret")
    event_id = add_event(db_url, "webform", "form.submitted", webform_body(answers={"Notes": "y" * 50_000}))
    _crash_once(monkeypatch, ctx.client, "add_ticket_note", after=True)
    with pytest.raises(Crash):
        process_event(ctx, event_id)
    expire_lease(db_url, event_id)
    assert process_event(ctx, event_id).state == "applied"
    (note,) = sandbox.notes.values()
    assert "more characters" in note["description"] and len(note["description"]) <= 32_000
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.note_id == note["id"]


def test_a_forged_marker_in_partner_text_is_not_adopted(
    db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Event A dies before its note POST; event B's answers carry A's marker. A's retry must not
    mistake B's note for its own: it writes its own note."""
    from pipelines.notes import marker

    url, sandbox = autotask
    ctx = make_context(db_url, url, note_key="deployment-secret")
    a = add_event(db_url, "webform", "form.submitted", webform_body())
    _crash_once(monkeypatch, ctx.client, "add_ticket_note", after=False)  # dies as the POST starts
    with pytest.raises(Crash):
        process_event(ctx, a)
    b = add_event(db_url, "webform", "form.submitted",
                  webform_body(answers={"Ref": f"see {marker(a, 'deployment-secret')}"}))
    assert process_event(ctx, b).state == "applied"
    expire_lease(db_url, a)
    assert process_event(ctx, a).state == "applied"
    assert len(sandbox.notes) == 2  # A's own note exists: B's did not pass for it
    effects = [store.get_effect(db_url, a), store.get_effect(db_url, b)]
    assert all(e is not None for e in effects) and effects[0].note_id != effects[1].note_id  # type: ignore[union-attr]


def test_follow_up_moves_mc_no_contact_on(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Without a delay the follow-up runs in its cause's run: no second read, one note for both."""
    url, sandbox = autotask
    queue = Queue()
    ctx = make_context(db_url, url, enqueue=queue, follow_up_delay_seconds=0)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    sandbox.calls.clear()
    result = process_event(ctx, cause)
    assert (result.state, result.reason) == ("applied", "note with the follow-up") and len(result.derived) == 1
    (child,) = result.derived
    assert queue == []  # already run: nothing for the broker
    row = store.get_event(db_url, child)
    assert row is not None and row.caused_by_id == cause and row.event_type == "mc.no_contact.follow_up"
    assert row.state == "applied"
    assert process_event(ctx, child).state == "applied"  # a late broker message finds it done
    assert sandbox.tickets[50002]["status"] == WAITING_CUSTOMER
    assert [(h["from"], h["to"]) for h in sandbox.history] == [(1, MC_NO_CONTACT), (MC_NO_CONTACT, WAITING_CUSTOMER)]
    (run,) = runs(db_url, child)
    assert (run.from_status, run.to_status) == ("MC No Contact", "Waiting Customer")
    # One read (the cause's: it names a ticket number, so a query), two PATCHes, one note that tells
    # both transitions: 4 calls for 2 transitions (picklists and the zone are read once per process).
    ticket_calls = {k: v for k, v in sandbox.calls.items() if k.partition(" ")[2].startswith("tickets")
                    and "entityinformation" not in k}
    assert ticket_calls == {"POST tickets/query": 1, "PATCH tickets": 2, "POST tickets/{id}/notes": 1}
    (note,) = sandbox.notes.values()
    assert "no contact" in note["description"].lower() and "moved on" in note["description"]
    assert store.get_effect(db_url, cause).note_id is None  # type: ignore[union-attr]
    assert store.get_effect(db_url, child).note_id == note["id"]  # type: ignore[union-attr]


def test_an_inline_follow_up_that_fails_goes_to_the_queue(db_url: str, autotask: tuple[str, SandboxState],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause is done; its follow-up failing unexpectedly (a database hiccup) must not fail the
    cause's task, and the follow-up is handed to the queue to run again."""
    url, _ = autotask
    queue = Queue()
    ctx = make_context(db_url, url, enqueue=queue, follow_up_delay_seconds=0)
    real_start = store.start_run
    calls = {"n": 0}

    def flaky_start(db: str, event_id: int, task_id: str | None, worker: str | None) -> int:
        calls["n"] += 1
        if calls["n"] == 2:  # the follow-up's run
            raise RuntimeError("database went away")
        return real_start(db, event_id, task_id, worker)

    monkeypatch.setattr(store, "start_run", flaky_start)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    result = process_event(ctx, cause)
    assert result.state == "applied"
    (child,) = result.derived
    assert queue == [(child, 0.0)]
    monkeypatch.setattr(store, "start_run", real_start)
    expire_lease(db_url, child)  # what the lease time does for the claim the failed run made
    assert process_event(ctx, child).state == "applied"


def test_a_rerun_after_a_crash_reads_the_ticket_before_its_follow_up(db_url: str, autotask: tuple[str, SandboxState],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause PATCHed, then its worker died before finishing; a technician completed the ticket; the
    sweeper's re-run must not hand its follow-up the status it wrote then (found by review)."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, follow_up_delay_seconds=0, read_batch=50, read_max_age_seconds=3.0)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002), ticket_id=50002)
    real = _Run._follow_up
    monkeypatch.setattr(_Run, "_follow_up", lambda *a, **k: (_ for _ in ()).throw(Crash()))
    with pytest.raises(Crash):
        process_event(ctx, cause)
    assert sandbox.tickets[50002]["status"] == MC_NO_CONTACT
    monkeypatch.setattr(_Run, "_follow_up", real)
    sandbox.set_status(50002, COMPLETE, actor="human")
    expire_lease(db_url, cause)
    result = process_event(ctx, cause)
    (child,) = result.derived
    row = store.get_event(db_url, child)
    assert row is not None and (row.state, row.reason) == ("skipped", f"status-changed: the note of event #{cause} written")
    assert sandbox.tickets[50002]["status"] == COMPLETE  # the technician's change stands
    assert len(sandbox.notes) == 1  # the cause's note, once, saying it was not moved on


def at_the_follow_ups_claim(monkeypatch: pytest.MonkeyPatch, before: Callable[[], bool | None]) -> None:
    """Run ``before`` as the inline follow-up takes its ticket (the run's second ticket claim);
    ``before`` returning False makes the ticket busy for it."""
    real = store.claim_ticket
    calls: list[int] = []

    def claim(db: str, ticket_id: int, event_id: int, lease: float) -> bool:
        calls.append(event_id)
        if len(calls) == 2 and before() is False:
            return False
        return real(db, ticket_id, event_id, lease)

    monkeypatch.setattr(store, "claim_ticket", claim)


def test_a_stale_follow_up_still_writes_its_causes_note(db_url: str, autotask: tuple[str, SandboxState],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The inline follow-up found the ticket busy and went to the queue; a newer event was applied before
    it ran, so it is stale: the note its cause left to it is still written (found by review)."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, follow_up_delay_seconds=0)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002), ticket_id=50002)
    at_the_follow_ups_claim(monkeypatch, lambda: False)  # busy: another event took the ticket in the gap
    (child,) = process_event(ctx, cause).derived
    monkeypatch.undo()
    assert store.get_event(db_url, child).state == "retrying"  # type: ignore[union-attr]
    newer = add_event(db_url, "mission-control", "mc.escalated",
                      mc_body("mc.escalated", 50002, when="2026-11-26T10:20:00Z"),
                      occurred_at=datetime(2026, 11, 26, 10, 20, tzinfo=UTC), ticket_id=50002)
    assert process_event(ctx, newer).state == "applied"
    with session_scope(db_url) as sess:
        sess.execute(update(InboundEvent).where(col(InboundEvent.id) == child).values(not_before=None))
    result = process_event(ctx, child)
    assert (result.state, result.reason) == ("skipped", f"stale: the note of event #{cause} written")
    texts = [n["description"] for n in sandbox.notes.values()]
    assert len(texts) == 2 and any("not moved on: a newer event was applied meanwhile" in t for t in texts)


def test_a_change_heard_between_cause_and_inline_follow_up_is_not_overwritten(
        db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    """A callout run records a person's change in the moment between the cause releasing the ticket
    and its follow-up taking it: the follow-up reads the ticket instead of trusting what its cause wrote."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, follow_up_delay_seconds=0)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002), ticket_id=50002)
    def person_acts_first() -> None:  # a technician set In Progress, and its callout has been run
        sandbox.set_status(50002, 8, actor="human")
        store.observe_status(db_url, 50002, 8, changed_at=datetime.now(UTC), by_resource_id=29683001,
                             by_atrelay=False, via="callout", event_id=None)

    at_the_follow_ups_claim(monkeypatch, person_acts_first)
    (child,) = process_event(ctx, cause).derived
    row = store.get_event(db_url, child)
    assert row is not None and (row.state, row.reason) == ("skipped", f"status-changed: the note of event #{cause} written")
    assert sandbox.tickets[50002]["status"] == 8


def test_follow_up_skipped_when_a_human_changed_the_status(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    # A delay leaves time for a person to act between the two transitions (without one, the follow-up
    # runs at once; the same check guards it). atrelay has not heard of the change (no callout): the
    # follow-up must read the ticket, shared reads on or not.
    url, sandbox = autotask
    ctx = make_context(db_url, url, follow_up_delay_seconds=20, read_batch=50, read_max_age_seconds=10.0)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    (child,) = process_event(ctx, cause).derived
    sandbox.set_status(50002, 8, actor="human")  # In Progress
    with session_scope(db_url) as sess:  # the 20 s have passed
        sess.execute(update(InboundEvent).where(col(InboundEvent.id) == child).values(not_before=None))
    result = process_event(ctx, child)
    assert (result.state, result.reason) == ("skipped", "status-changed")
    assert sandbox.tickets[50002]["status"] == 8
    assert len(sandbox.notes) == 1


def test_follow_up_waits_for_its_delay(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    queue = Queue()
    ctx = make_context(db_url, url, enqueue=queue, follow_up_delay_seconds=600)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    (child,) = process_event(ctx, cause).derived
    assert queue == []  # ten minutes is too long for a broker countdown: parked in the database
    row = store.get_event(db_url, child)
    assert row is not None and row.state == "parked" and row.not_before is not None
    assert process_event(ctx, child).state == "parked"


def test_short_follow_up_delay_uses_a_countdown(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    queue = Queue()
    ctx = make_context(db_url, url, enqueue=queue, follow_up_delay_seconds=20)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    (child,) = process_event(ctx, cause).derived
    assert queue == [(child, 20.0)]
    result = process_event(ctx, child)
    assert result.state == "not-yet" and result.retry_in is not None and 15 < result.retry_in <= 20


def test_older_event_never_regresses_the_ticket(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    newer = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50003, "2026-11-26T11:00:00Z"),
                      occurred_at=datetime(2026, 11, 26, 11, tzinfo=UTC))
    older = add_event(db_url, "mission-control", "mc.out_of_scope",
                      mc_body("mc.out_of_scope", 50003, "2026-11-26T10:00:00Z"))
    assert process_event(ctx, newer).state == "applied"
    result = process_event(ctx, older)
    assert (result.state, result.reason) == ("skipped", "stale: a newer event was already applied; note written")
    assert sandbox.tickets[50003]["status"] == 29682845  # Sent from MC
    notes = [n["description"] for n in sandbox.notes.values()]
    assert len(notes) == 2 and "NOT applied: stale" in notes[1]  # its information still reaches the ticket


def test_unparseable_stored_event_is_dead(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", b'{"type": "form.submitted"}')
    result = process_event(ctx, event_id)
    assert result.state == "dead" and result.reason is not None and result.reason.startswith("unparseable")


def test_final_events_are_not_claimed_again(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    process_event(ctx, event_id)
    assert process_event(ctx, event_id).state == EventState.APPLIED
    assert process_event(ctx, 999_999).state == "missing"
    assert len(runs(db_url, event_id)) == 1


def test_note_that_timed_out_but_landed_is_not_posted_twice(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A note POST that times out may still have been created: never re-sent blindly."""
    import time as _time

    from connectors.autotask.client import AutotaskClient
    from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS as C

    url, sandbox = autotask
    client = AutotaskClient(username=C["username"], secret=C["secret"], integration_code=C["integration_code"],
                            zone_url=f"{url}/atservicesrest/v1.0/zoneInformation", timeout=0.3, max_attempts=3,
                            sleep=lambda _s: None)
    ctx = make_context(db_url, url, client=client)
    ctx.lists()
    sandbox.script = [{"endpoint": "ticketnotes", "method": "POST", "delay_ms": 600, "then": "process"}]
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert result.state == "retrying" and (result.reason or "").startswith("autotask-transport")
    assert sandbox.calls["POST tickets/{id}/notes"] == 1  # not retried inside the call
    wait_until = _time.monotonic() + 5
    while not sandbox.notes and _time.monotonic() < wait_until:
        _time.sleep(0.05)
    assert len(sandbox.notes) == 1  # it landed after the client gave up
    with session_scope(db_url) as s:
        s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(not_before=None))
    assert process_event(ctx, event_id).state == "applied"
    assert len(sandbox.notes) == 1 and sandbox.calls["POST ticketnotes/query"] == 1
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.note_id == next(iter(sandbox.notes))


def test_reads_are_retried_inside_the_call_after_a_timeout(autotask: tuple[str, SandboxState]) -> None:
    from connectors.autotask.client import AutotaskClient
    from workers.settings import SANDBOX_AUTOTASK_CREDENTIALS as C

    url, sandbox = autotask
    client = AutotaskClient(username=C["username"], secret=C["secret"], integration_code=C["integration_code"],
                            base_url=f"{url}/atservicesrest", zone_url="unused", timeout=0.3, max_attempts=3,
                            sleep=lambda _s: None)
    sandbox.script = [{"endpoint": "tickets", "method": "GET", "delay_ms": 600, "then": "process"}]
    assert client.get_ticket(50001).id == 50001
    assert sandbox.calls["GET tickets/{id}"] == 2


def test_follow_up_does_not_make_later_partner_events_stale(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The follow-up carries its cause's partner time, not atrelay's processing time."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    cause = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002, "2026-11-26T10:15:00Z"),
                      occurred_at=datetime(2026, 11, 26, 10, 15, tzinfo=UTC))
    (child,) = process_event(ctx, cause).derived
    assert process_event(ctx, child).state == "applied"
    later = add_event(db_url, "webform", "form.submitted", webform_body(50002, "2026-11-26T10:20:00Z"),
                      occurred_at=datetime(2026, 11, 26, 10, 20, tzinfo=UTC))
    assert process_event(ctx, later).state == "applied"
    assert sandbox.tickets[50002]["status"] == RECEIVED_FORM
