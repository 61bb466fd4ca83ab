"""Runs that fail in a way nobody planned for (issue 19, point 2): text the audit database cannot keep
never breaks a run, and an event whose runs keep crashing is dead-lettered with the exception instead
of being re-run by the sweeper for ever. On SQLite and on PostgreSQL (which refuses NUL in text)."""

from __future__ import annotations

import html
import json
import logging

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from sqlmodel import col

from pipelines import alerts, store
from pipelines.audit import EffectLedger, InboundEvent
from pipelines.context import Context
from pipelines.db import REPLACEMENT, session_scope, storable
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, webform_body

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

RECEIVED_FORM = 29682844
#: How the event's story (its run rows: dashboard event page, `atrelay events show`) says text was replaced.
REPLACED_NOTE = "stored {field} with {n} character{s} the audit database cannot keep replaced by U+FFFD"


def _said(field: str, n: int) -> str:
    return REPLACED_NOTE.format(field=field, n=n, s="" if n == 1 else "s")


def _run_reasons(db: str, event_id: int) -> list[str]:
    story = store.event_story(db, event_id)
    assert story is not None
    return [r.reason or "" for r in story.runs]


def _crash_until_dead(ctx: Context, db: str, event_id: int, runs: int) -> list[tuple[str, str | None]]:
    seen = []
    for _ in range(runs):
        result = process_event(ctx, event_id)
        seen.append((result.state, result.reason))
        with session_scope(db) as s:  # the retry's pause has passed
            s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(not_before=None))
    return seen


def test_a_nul_in_a_partner_answer_is_written_to_autotask_and_stored_replaced(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    body = json.loads(webform_body())
    body["data"]["answers"]["Notes"] = "line one\u0000line two"
    event_id = add_event(db_url, "webform", "form.submitted", json.dumps(body).encode())
    result = process_event(ctx, event_id)
    assert result.state == "applied", result.reason
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM
    (note,) = sandbox.notes.values()
    assert "line one\u0000line two" in note["description"]  # Autotask gets what the partner wrote
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.note_text is not None
    assert f"line one{REPLACEMENT}line two" in effect.note_text and "\u0000" not in effect.note_text
    # The event's story says so, once for the run that stored it (which field, how many).
    (first,) = _run_reasons(db_url, event_id)
    assert first.count(_said("note_text", 1)) == 1, first
    assert process_event(ctx, event_id).state == "applied"  # and a re-run writes nothing more
    assert len(sandbox.notes) == 1
    assert sum(r.count("stored note_text with") for r in _run_reasons(db_url, event_id)) == 1


def test_lone_surrogates_are_stored_replaced_and_the_story_says_so(
        db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    # Partner JSON with a lone surrogate does not parse, but Python's json (Autotask's and TimeZest's
    # answers) and exception texts carry them, and neither database can encode one.
    assert storable("a\ud800b\udfffc\x00") == f"a{REPLACEMENT}b{REPLACEMENT}c{REPLACEMENT}"
    assert storable("\U0001f600 kept") == "\U0001f600 kept"  # a real astral character is not a surrogate
    url, _ = autotask
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())
    run_id = store.start_run(db_url, event_id, None, None)
    store.update_effect(db_url, EffectLedger(event_id=event_id, ticket_id=50001),
                        note_text="a\ud83d b\udc00 c\x00", note_started_at=None)
    effect = store.get_effect(db_url, event_id)
    assert effect is not None and effect.note_text == f"a{REPLACEMENT} b{REPLACEMENT} c{REPLACEMENT}"
    store.update_effect(db_url, effect, note_text="\ud800 again")  # the same run, the same field: said once
    store.finish_run(db_url, event_id=event_id, run_id=run_id, state=store.EventState.SKIPPED, outcome="skipped",
                     reason="stale \ud800")
    (reason,) = _run_reasons(db_url, event_id)
    assert reason.startswith(f"stale {REPLACEMENT}; "), reason  # the outcome first, then the notes
    assert reason.count("stored note_text with") == 1 and _said("note_text", 3) in reason
    assert _said("reason", 1) in reason
    row = store.get_event(db_url, event_id)
    assert row is not None and row.reason == f"stale {REPLACEMENT}"  # the event's reason is the outcome alone

    # A crash whose message quotes such text is recorded (a dead letter), not a run that cannot end.
    crashing = add_event(db_url, "webform", "form.submitted", webform_body())

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Autotask said \ud800\x00")

    monkeypatch.setattr("pipelines.process.render_note", broken)
    # The crash's log line carries the lone surrogate as raised: atrelay's JSON logs escape it, but pytest
    # keeps the raw record with the test's report, and xdist cannot send a report holding one.
    quiet = logging.Logger("tests.crashes.quiet")  # no parent, so nothing captures it
    quiet.addHandler(logging.NullHandler())  # else logging's last resort prints it to stderr, captured too
    monkeypatch.setattr("pipelines.runbase.log", quiet)
    ((state, why),) = _crash_until_dead(make_context(db_url, url, max_crashes=1), db_url, crashing, 1)
    assert (state, why) == ("dead", f"crashed 1 times: RuntimeError: Autotask said {REPLACEMENT}{REPLACEMENT}")
    (reason,) = _run_reasons(db_url, crashing)
    assert reason.startswith("crashed 1 times") and _said("crash summary", 2) in reason


def test_an_event_whose_runs_keep_crashing_is_dead_lettered_with_the_exception(
        db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, max_crashes=3)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the note renderer")

    monkeypatch.setattr("pipelines.process.render_note", broken)
    seen = _crash_until_dead(ctx, db_url, event_id, 3)
    assert [state for state, _ in seen] == ["retrying", "retrying", "dead"]
    assert seen[0][1] == "crashed (1 of 3): RuntimeError: a bug in the note renderer"
    row = store.get_event(db_url, event_id)
    assert row is not None and row.state == "dead" and row.crashes == 3
    assert row.reason == "crashed 3 times: RuntimeError: a bug in the note renderer"
    # The status was written once, before the note failed; a replay after the fix writes the note only.
    monkeypatch.undo()
    assert store.replay(db_url, event_id)[0]
    assert process_event(ctx, event_id).state == "applied"
    assert len(sandbox.notes) == 1 and len([h for h in sandbox.history if h["to"] == RECEIVED_FORM]) == 1


def test_a_run_dead_lettered_by_crashes_shows_on_the_dashboard_and_in_the_dead_letter_alert(
        ops_client: TestClient, sqlite_url: str, autotask: tuple[str, SandboxState],
        monkeypatch: pytest.MonkeyPatch) -> None:
    url, _ = autotask
    event_id = add_event(sqlite_url, "webform", "form.submitted", webform_body())

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the note renderer")

    monkeypatch.setattr("pipelines.process.render_note", broken)
    seen = _crash_until_dead(make_context(sqlite_url, url, max_crashes=2), sqlite_url, event_id, 2)
    assert [state for state, _ in seen] == ["retrying", "dead"]
    reason = "crashed 2 times: RuntimeError: a bug in the note renderer"

    page = html.unescape(ops_client.get("/ops").text)
    dead = page.split('<section id="dead">', 1)[1].split("</section>", 1)[0]
    assert f'href="/ops/events/{event_id}"' in dead and reason in dead
    assert f'id="replay-{event_id}"' in dead  # after the fix, a replay runs it again

    (made,) = alerts.record_dead_letters(sqlite_url)
    (alert,) = [a for a in alerts.recent_alerts(sqlite_url) if a.id == made]
    assert alert.kind == "dead_letter" and alert.fields["event_ids"] == [event_id]
    assert f"event #{event_id}" in alert.title and reason in alert.body
