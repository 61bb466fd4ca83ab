"""Runs that fail in a way nobody planned for (issue 19, point 2): text the audit database cannot keep
never breaks a run, and an event whose runs keep crashing is dead-lettered with the exception instead
of being re-run by the sweeper for ever. On SQLite and on PostgreSQL (which refuses NUL in text)."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update
from sqlmodel import col

from pipelines import store
from pipelines.audit import InboundEvent
from pipelines.db import REPLACEMENT, session_scope
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, webform_body

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

RECEIVED_FORM = 29682844


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
    assert process_event(ctx, event_id).state == "applied"  # and a re-run writes nothing more
    assert len(sandbox.notes) == 1


def test_an_event_whose_runs_keep_crashing_is_dead_lettered_with_the_exception(
        db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url, max_crashes=3)
    event_id = add_event(db_url, "webform", "form.submitted", webform_body())

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("a bug in the note renderer")

    monkeypatch.setattr("pipelines.process.render_note", broken)
    seen = []
    for _ in range(3):
        result = process_event(ctx, event_id)
        seen.append((result.state, result.reason))
        with session_scope(db_url) as s:  # the retry's pause has passed
            s.execute(update(InboundEvent).where(col(InboundEvent.id) == event_id).values(not_before=None))
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
