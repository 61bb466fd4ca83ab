"""Shadow mode (issue 22) in-process, on both databases: would-be writes recorded instead of made, events
accepted in shadow mode never written after going live, the report's verdicts, shadow-marked alerts."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import select

from pipelines import shadow, store
from pipelines.alerts import recent_alerts, record_alert
from pipelines.audit import EffectLedger, InboundEvent, ShadowWrite
from pipelines.db import session_scope, utcnow
from pipelines.process import process_event
from pipelines.shadow_report import shadow_report
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body

RECEIVED_FORM, MC_NO_CONTACT, WAITING_CUSTOMER, IN_PROGRESS = 29682844, 29682847, 7, 8
TECHNICIAN = 29682885


def writes(db: str) -> list[ShadowWrite]:
    with session_scope(db) as s:
        return list(s.exec(select(ShadowWrite).order_by(ShadowWrite.id)).all())  # type: ignore[arg-type]


def autotask_writes(sandbox: SandboxState) -> int:
    """PATCHes and note POSTs that reached the sandbox."""
    return sum(n for k, n in sandbox.calls.items() if k.startswith("PATCH ") or (k.startswith("POST ")
                                                                               and k.endswith("/notes")))


def test_a_shadow_run_records_the_patch_and_the_note_and_writes_nothing(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    assert shadow.record_mode(db_url, shadow=True, by="test").switched == "shadow"
    ctx = make_context(db_url, url, shadow=True)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    result = process_event(ctx, event_id)
    assert result.state == "applied" and result.reason is not None and result.reason.startswith("shadow:")
    assert autotask_writes(sandbox) == 0 and sandbox.tickets[50001]["status"] == 1 and not sandbox.notes
    patch, note = writes(db_url)
    assert (patch.kind, patch.ticket_id, patch.from_status_id, patch.to_status_id, patch.to_status, patch.why) == (
        "patch", 50001, 1, RECEIVED_FORM, "Received Form Response", "mode")
    assert note.kind == "note" and note.note_text is not None and "First name: Sam" in note.note_text
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.patched_at is None and effect.note_id is None  # the ledger tells the truth
    assert store.observed_status(db_url, 50001) is None  # a person setting it later is heard as a change
    # Run again (a replay): still nothing written, nothing recorded twice.
    store.replay(db_url, event_id)
    process_event(ctx, event_id)
    assert autotask_writes(sandbox) == 0 and len(writes(db_url)) == 2


def test_an_inline_follow_up_is_simulated_from_the_status_atrelay_would_have_left(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    shadow.record_mode(db_url, shadow=True, by="test")
    ctx = make_context(db_url, url, shadow=True)
    event_id = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    process_event(ctx, event_id)
    assert autotask_writes(sandbox) == 0
    patches = [(w.event_type, w.to_status_id) for w in writes(db_url) if w.kind == "patch"]
    assert patches == [("mc.no_contact", MC_NO_CONTACT), ("mc.no_contact.follow_up", WAITING_CUSTOMER)]
    # One note tells both transitions, as in live mode: held back on the follow-up.
    assert [w.event_type for w in writes(db_url) if w.kind == "note"] == ["mc.no_contact.follow_up"]


def test_events_accepted_in_shadow_mode_are_never_written_after_going_live(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    shadow.record_mode(db_url, shadow=True, by="test")
    done = add_event(db_url, "webform", "form.submitted", webform_body())
    waiting = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact"))
    process_event(make_context(db_url, url, shadow=True), done)
    switch = shadow.record_mode(db_url, shadow=False, by="test live")
    assert (switch.switched, switch.accepted, switch.waiting) == ("live", 2, 1)
    assert shadow.record_mode(db_url, shadow=False, by="another live").switched is None  # told once
    live = make_context(db_url, url)
    # Still waiting at the switch, run by a live worker: recorded, never written (its follow-up neither).
    process_event(live, waiting)
    # A replay of one decided in shadow mode: the same.
    store.replay(db_url, done)
    process_event(live, done)
    assert autotask_writes(sandbox) == 0
    assert {(w.event_type, w.why) for w in writes(db_url) if w.kind == "patch"} >= {
        ("mc.no_contact", "accepted"), ("mc.no_contact.follow_up", "accepted")}
    # An event accepted after the switch is written.
    fresh = add_event(db_url, "webform", "form.submitted", webform_body("T20261126.0003"))
    assert process_event(live, fresh).state == "applied"
    assert sandbox.tickets[50003]["status"] == RECEIVED_FORM and autotask_writes(sandbox) == 2


def test_the_report_sets_would_be_writes_beside_what_people_did(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, _sandbox = autotask
    shadow.record_mode(db_url, shadow=True, by="test")
    ctx = make_context(db_url, url, shadow=True)
    ids = [add_event(db_url, "webform", "form.submitted", webform_body(f"T20261126.000{n}")) for n in (1, 2, 3)]
    for event_id in ids:
        process_event(ctx, event_id)
    skipped = add_event(db_url, "webform", "form.submitted", webform_body("T20261126.0009"))  # no such ticket
    process_event(ctx, skipped)
    now = utcnow()
    # A person sets the same status on 50001 and another on 50002; nobody touches 50003.
    for ticket, status in ((50001, RECEIVED_FORM), (50002, IN_PROGRESS)):
        store.observe_status(db_url, ticket, status, changed_at=now + timedelta(minutes=5), by_resource_id=TECHNICIAN,
                             by_atrelay=False, via="callout", event_id=None)
    report = shadow_report(db_url, agree_minutes=60, now=now + timedelta(minutes=10))
    verdicts = {e.event_id: (e.verdict, e.people_set) for e in report.events}
    assert [verdicts[i] for i in ids] == [("agree", "Received Form Response"), ("disagree", "status #8"),
                                          ("pending", None)]
    assert verdicts[skipped][0] in ("skipped", "waiting")
    (rule,) = report.rules
    assert (rule.rule, rule.would_apply, rule.agree, rule.disagree, rule.pending) == ("form.submitted", 3, 1, 1, 1)
    assert rule.look_at == ["50002"] and sum(rule.skipped.values()) + rule.waiting == 1
    assert report.agreement == (1, 2)
    # The window passed: nobody changed 50003.
    later = shadow_report(db_url, agree_minutes=60, now=now + timedelta(hours=2))
    assert {e.event_id: e.verdict for e in later.events}[ids[2]] == "no-change"


def test_alerts_recorded_in_shadow_mode_are_marked(db_url: str) -> None:
    record_alert(db_url, kind="budget", key="live-one", title="Budget", body="90 % used")
    shadow.record_mode(db_url, shadow=True, by="test")
    record_alert(db_url, kind="budget", key="shadow-one", title="Budget", body="90 % used")
    marked = {a.key: a for a in recent_alerts(db_url)}
    assert marked["shadow-one"].title.startswith("[shadow]") and "shadow mode" in marked["shadow-one"].body
    assert not marked["live-one"].title.startswith("[shadow]")


def test_nothing_is_held_back_when_atrelay_never_ran_in_shadow(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    assert not shadow.accepted_in_shadow(db_url, event_id)
    process_event(make_context(db_url, url), event_id)
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM and writes(db_url) == []
    with session_scope(db_url) as s:
        effect = s.get(EffectLedger, event_id)
        row = s.get(InboundEvent, event_id)
    assert effect is not None and effect.patched_at is not None and row is not None and "shadow" not in (row.reason or "")
