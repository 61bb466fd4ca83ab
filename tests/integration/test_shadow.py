"""Shadow mode (issue 22) in-process, on both databases: would-be writes recorded instead of made, events
accepted in shadow mode never written after going live, the report's verdicts (would-skip by reason, the
agreement window), shadow-marked alerts, and the mode as the dashboard, /metrics and doctor show it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from sqlmodel import select
from typer.testing import CliRunner

from pipelines import shadow, store
from pipelines.alerts import recent_alerts, record_alert
from pipelines.audit import EffectLedger, InboundEvent, ShadowPeriod, ShadowWrite
from pipelines.db import session_scope, utcnow
from pipelines.process import process_event
from pipelines.shadow_report import shadow_report
from sandboxes.autotask.state import SandboxState
from tests.conftest import autotask_env
from tests.integration.conftest import DASHBOARD_TOKEN
from tests.integration.helpers import add_event, make_context, mc_body, webform_body
from workers.cli.doctor import run_doctor
from workers.cli.main import app as cli
from workers.http.ingress import create_app
from workers.settings import load_settings, reset_settings_cache

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


def _at(hour: int, minute: int) -> datetime:
    return datetime(2026, 11, 26, hour, minute, tzinfo=UTC)


def test_the_report_counts_would_skips_under_their_reason(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    shadow.record_mode(db_url, shadow=True, by="test")
    ctx = make_context(db_url, url, shadow=True)
    applied = add_event(db_url, "webform", "form.submitted", webform_body(), occurred_at=_at(9, 30))
    assert process_event(ctx, applied).state == "applied"
    # Older than the event atrelay (would have) applied on 50001: stale.
    stale = add_event(db_url, "mission-control", "mc.escalated",
                      mc_body("mc.escalated", "T20261126.0001", when="2026-11-26T09:00:00Z"), occurred_at=_at(9, 0))
    # A person set 50002 In Progress after this form was submitted: superseded.
    store.observe_status(db_url, 50002, IN_PROGRESS, changed_at=_at(9, 45), by_resource_id=TECHNICIAN,
                         by_atrelay=False, via="callout", event_id=None)
    superseded = add_event(db_url, "webform", "form.submitted", webform_body("T20261126.0002"), occurred_at=_at(9, 30))
    # 50003 already shows the form's status: a note only, which is no skip.
    sandbox.tickets[50003]["status"] = RECEIVED_FORM
    note_only = add_event(db_url, "webform", "form.submitted", webform_body("T20261126.0003"), occurred_at=_at(9, 30))
    for event_id in (stale, superseded, note_only):
        process_event(ctx, event_id)
    assert autotask_writes(sandbox) == 0
    lines = {e.event_id: e for e in shadow_report(db_url).events}
    # Each skip still owes the technician a note (recorded), but the status change would be skipped.
    assert [(lines[i].state, lines[i].verdict, lines[i].note) for i in (stale, superseded)] == [
        ("skipped", "skipped", True), ("skipped", "skipped", True)]
    assert (lines[note_only].verdict, lines[note_only].note) == ("note-only", True)
    rules = {r.rule: r for r in shadow_report(db_url).rules}
    assert (dict(rules["mc.escalated"].skipped), rules["mc.escalated"].note_only) == ({"stale": 1}, 0)
    form = rules["form.submitted"]
    assert (dict(form.skipped), form.would_apply, form.note_only, form.events) == ({"superseded": 1}, 1, 1, 3)


def _age(db: str, by: timedelta) -> None:
    """Everything recorded so far happened ``by`` earlier (a shadow period some hours old)."""
    with session_scope(db) as s:
        for e in s.exec(select(InboundEvent)).all():
            e.received_at -= by
        for w in s.exec(select(ShadowWrite)).all():
            w.at -= by
        for p in s.exec(select(ShadowPeriod)).all():
            p.started_at -= by


def _report_json(monkeypatch: pytest.MonkeyPatch, db: str, **env: str) -> dict[str, object]:
    """`atrelay shadow report --format json`, with this environment (settings read afresh)."""
    monkeypatch.setenv("ATRELAY_DATABASE_URL", db)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    reset_settings_cache()
    out = CliRunner().invoke(cli, ["shadow", "report", "--format", "json"])
    assert out.exit_code == 0, out.output
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def test_agreement_counts_within_agree_minutes_60_by_default(sqlite_url: str, autotask: tuple[str, SandboxState],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    url, _sandbox = autotask
    assert load_settings().shadow_agree_minutes == 60
    shadow.record_mode(sqlite_url, shadow=True, by="test")
    ctx = make_context(sqlite_url, url, shadow=True)
    for n in (1, 2):
        process_event(ctx, add_event(sqlite_url, "webform", "form.submitted", webform_body(f"T20261126.000{n}")))
    _age(sqlite_url, timedelta(hours=3))
    at = {w.ticket_id: w.at for w in writes(sqlite_url) if w.kind == "patch"}
    # A person sets the very status atrelay would have set: 59 minutes after on 50001, 61 after on 50002.
    for ticket, minutes in ((50001, 59), (50002, 61)):
        store.observe_status(sqlite_url, ticket, RECEIVED_FORM, changed_at=at[ticket] + timedelta(minutes=minutes),
                             by_resource_id=TECHNICIAN, by_atrelay=False, via="callout", event_id=None)
    default = _report_json(monkeypatch, sqlite_url)
    verdicts = {e["ticket"]: e["verdict"] for e in default["events"]}  # type: ignore[attr-defined]
    assert (default["agree_minutes"], default["agreed"], default["decided"]) == (60, 1, 1)
    assert verdicts == {"50001": "agree", "50002": "no-change"}  # after the window: no agreement
    wider = _report_json(monkeypatch, sqlite_url, ATRELAY_SHADOW_AGREE_MINUTES="90")
    assert (wider["agree_minutes"], wider["agreed"], wider["decided"]) == (90, 2, 2)


# ---- the mode shown on the dashboard, /metrics and doctor -------------------------------------------

@pytest.fixture
def shadow_client(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The ingress app of a process in shadow mode, signed in to the dashboard."""
    monkeypatch.setenv("ATRELAY_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("ATRELAY_ADMIN_TOKEN", DASHBOARD_TOKEN)
    monkeypatch.setenv("ATRELAY_MODE", "shadow")
    with TestClient(create_app(load_settings(), enqueue=lambda _i: None),
                    headers={"authorization": f"Bearer {DASHBOARD_TOKEN}"}) as client:
        yield client


def _a_shadow_hour(db: str, url: str) -> tuple[int, int]:
    """Shadow mode: one would-be status change and note (on 50001, a person then sets the same status) and
    one stale event; returns their ids."""
    shadow.record_mode(db, shadow=True, by="test")
    ctx = make_context(db, url, shadow=True)
    applied = add_event(db, "webform", "form.submitted", webform_body(), occurred_at=_at(9, 30))
    process_event(ctx, applied)
    stale = add_event(db, "mission-control", "mc.escalated",
                      mc_body("mc.escalated", "T20261126.0001", when="2026-11-26T09:00:00Z"), occurred_at=_at(9, 0))
    process_event(ctx, stale)
    store.observe_status(db, 50001, RECEIVED_FORM, changed_at=utcnow() + timedelta(minutes=1),
                         by_resource_id=TECHNICIAN, by_atrelay=False, via="callout", event_id=None)
    return applied, stale


def test_the_dashboard_says_shadow_on_every_page_and_shows_the_report(
        shadow_client: TestClient, sqlite_url: str, autotask: tuple[str, SandboxState]) -> None:
    applied, stale = _a_shadow_hour(sqlite_url, autotask[0])
    for page in ("/ops", "/ops/shadow", f"/ops/events/{applied}"):
        text = shadow_client.get(page).text
        assert 'id="shadow-mode"' in text and "nothing is written to Autotask" in text, page
    report = shadow_client.get("/ops/shadow").text
    assert "Agreement: 1 of 1" in report and "within 60 min" in report
    assert "<td>stale 1</td>" in report  # the mc.escalated row's would-skip column
    assert f'href="/ops/events/{stale}"' in report and f'href="/ops/events/{applied}"' in report


def test_a_live_dashboard_has_no_shadow_bar(ops_client: TestClient) -> None:
    for page in ("/ops", "/ops/shadow"):
        text = ops_client.get(page).text
        assert "atrelay ops" in text and 'id="shadow-mode"' not in text, page
    assert "has not run in shadow mode" in ops_client.get("/ops/shadow").text


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_say_the_mode_and_the_writes_held_back(shadow_client: TestClient, sqlite_url: str,
                                                        autotask: tuple[str, SandboxState]) -> None:
    with TestClient(create_app(load_settings(mode="live"), enqueue=lambda _i: None)) as live_client:
        live = _samples(live_client.get("/metrics").text)
    assert live[("atrelay_mode", (("mode", "live"),))] == 1 and ("atrelay_mode", (("mode", "shadow"),)) not in live
    assert not any(name == "atrelay_shadow_would_writes" for name, _ in live)  # never ran in shadow
    _a_shadow_hour(sqlite_url, autotask[0])
    held = _samples(shadow_client.get("/metrics").text)
    assert held[("atrelay_mode", (("mode", "shadow"),))] == 1 and ("atrelay_mode", (("mode", "live"),)) not in held
    # One status change (the form) and two notes (the form's, and the stale report's note instead).
    assert held[("atrelay_shadow_would_writes", (("kind", "patch"),))] == 1
    assert held[("atrelay_shadow_would_writes", (("kind", "note"),))] == 2


def _doctor(monkeypatch: pytest.MonkeyPatch, db: str, url: str, mode: str) -> str:
    for key, value in {**autotask_env(url), "ATRELAY_DATABASE_URL": db, "ATRELAY_MODE": mode}.items():
        monkeypatch.setenv(key, value)
    out = Console(record=True, width=400)
    run_doctor(load_settings(), out, out)
    return out.export_text()


def test_doctor_says_shadow_then_repeats_the_count_never_written_after_going_live(
        sqlite_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    url, _sandbox = autotask
    _a_shadow_hour(sqlite_url, url)
    since = f"{shadow.periods(sqlite_url)[0].started_at:%Y-%m-%d %H:%M}"
    said = _doctor(monkeypatch, sqlite_url, url, "shadow")
    assert (f"ok      mode: SHADOW since {since} UTC (ATRELAY_MODE=shadow): nothing is written to Autotask: 2 event(s) "
            "accepted, 1 status change(s) and 2 note(s) recorded instead of written") in said, said
    # A process still in shadow mode, seen from a live one: a warning.
    assert f"mode: live here, but a shadow period is still open since {since}" in _doctor(
        monkeypatch, sqlite_url, url, "live")
    add_event(sqlite_url, "webform", "form.submitted", webform_body("T20261126.0003"))  # accepted, not yet run
    switch = shadow.record_mode(sqlite_url, shadow=False, by="test live")
    assert (switch.switched, switch.accepted, switch.waiting) == ("live", 3, 1)
    after = _doctor(monkeypatch, sqlite_url, url, "live")
    assert "mode: SHADOW" not in after and "a shadow period is still open" not in after
    assert (f"ok      mode: live since {_switch_at(sqlite_url)} UTC; the 3 event(s) accepted in shadow mode before that "
            "are never written to Autotask") in after, after


def _switch_at(db: str) -> str:
    (period,) = shadow.periods(db)
    assert period.ended_at is not None
    return f"{period.ended_at:%Y-%m-%d %H:%M}"
