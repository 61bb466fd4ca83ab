"""The event page shows the note atrelay posted; dead letters read as plain sentences; no useless Replay.

Issue 13 ("the first hour"): the dashboard showed a note id but not its text, raw reason codes, and a
Replay button on dead letters that a replay can only reproduce (a ticket that does not exist, bytes
that do not parse).
"""

from __future__ import annotations

import html
import uuid
from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from pipelines import store
from pipelines.audit import EventState, InboundEvent
from pipelines.db import engine_for
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, webform_body
from workers.http.dead_letters import explain


def _for_ticket(db: str, number: str) -> int:
    """A web-form event recorded as the ingress records it: with the ticket number it names."""
    event_id, _ = store.insert_event(db, store.NewEvent(
        source="webform", external_id=f"msg_{uuid.uuid4().hex}", event_type="form.submitted",
        body=webform_body(number), headers={}, ticket_number=number,
        occurred_at=datetime(2026, 11, 26, 9, 30, tzinfo=UTC)))
    return event_id


def test_event_page_shows_the_note_text_atrelay_posted(ops_client: TestClient, sqlite_url: str,
                                                       autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    event_id = add_event(sqlite_url, "webform", "form.submitted", webform_body())
    assert process_event(make_context(sqlite_url, url), event_id).state == "applied"
    (note,) = sandbox.notes.values()
    page = html.unescape(ops_client.get(f"/ops/events/{event_id}").text)
    assert "Note atrelay posted" in page and f"Autotask note #{note['id']}" in page
    assert "kept in the audit DB when posting" in page  # says where the text comes from
    shown = page.split('<pre id="note-text">', 1)[1].split("</pre>", 1)[0]
    assert shown == f"{note['title']}\n\n{note['description']}"  # exactly what Autotask received


def test_ticket_not_found_explains_itself_and_offers_replay_only_once_the_ticket_exists(
        ops_client: TestClient, sqlite_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(sqlite_url, url)
    dead = _for_ticket(sqlite_url, "T19990101.0001")
    assert process_event(ctx, dead).state == "dead"

    page = ops_client.get(f"/ops/events/{dead}").text
    assert "Autotask has no ticket with this number or id" in page
    assert 'id="raw-reason">ticket-not-found' in page  # the raw reason stays visible
    assert 'id="replay"' not in page and "Replay is not offered" in page and f"atrelay replay {dead}" in page
    index = ops_client.get("/ops").text
    assert f'id="replay-{dead}"' not in index and f'id="no-replay-{dead}"' in index
    assert "Autotask has no ticket with this number or id" in index

    # The ticket appears and a later event reaches it: now a replay can help, and is offered.
    sandbox.create_ticket({"ticketNumber": "T19990101.0001", "title": "late"}, sandbox.actor("technician"))
    later = _for_ticket(sqlite_url, "T19990101.0001")
    assert process_event(ctx, later).state == "applied"
    page = ops_client.get(f"/ops/events/{dead}").text
    assert 'id="replay"' in page and f"Event #{later} has since reached this ticket" in page
    assert f'id="replay-{dead}"' in ops_client.get("/ops").text


def test_an_unparseable_dead_letter_offers_no_replay(ops_client: TestClient, sqlite_url: str,
                                                     autotask: tuple[str, SandboxState]) -> None:
    url, _ = autotask
    dead = add_event(sqlite_url, "webform", "form.submitted", b'{"type": "form.submitted", "data": 7}')
    assert process_event(make_context(sqlite_url, url), dead).state == "dead"
    page = ops_client.get(f"/ops/events/{dead}").text
    assert 'id="raw-reason">unparseable' in page
    assert "could not be read as this partner" in page
    assert 'id="replay"' not in page and "parse the same bytes" in page


def test_a_fixable_dead_letter_keeps_its_replay_with_a_plain_sentence(ops_client: TestClient, sqlite_url: str) -> None:
    event_id = add_event(sqlite_url, "webform", "form.submitted", webform_body())
    with engine_for(sqlite_url).begin() as conn:
        conn.execute(update(InboundEvent.__table__).where(InboundEvent.__table__.c.id == event_id)  # type: ignore[attr-defined]
                     .values(state=EventState.DEAD, reason="unknown-status: no active status 'Recieved'"))
    page = ops_client.get(f"/ops/events/{event_id}").text
    assert "fix the rules file or the status in Autotask, restart atrelay, then replay" in page
    assert "unknown-status: no active status" in html.unescape(page)
    assert 'id="replay"' in page


@pytest.mark.parametrize(("state", "reason", "needle", "helps"), [
    ("dead", "autotask-auth: 401 Unauthorized", "ATRELAY_AUTOTASK_USERNAME", True),
    ("dead", "unknown-status: 'Recieved'", "rules file", True),
    ("dead", "retries-exhausted after 9 attempts: autotask-unavailable: 503", "retry horizon", True),
    ("dead", "autotask-rejected: title is required", "rejected the change", True),
    ("invalid", "still invalid: data.ticket_number: missing", "failed validation", True),
    ("dead", "ticket-not-found: T1", "no ticket with this number", False),
    ("dead", "unparseable: 1 validation error", "could not be read", False),
    ("dead", "something new", "read the reason below", True),
])
def test_reason_codes_map_to_one_plain_sentence(state: str, reason: str, needle: str, helps: bool) -> None:
    x = explain(5, state, reason)
    assert needle in x.sentence and x.sentence.count(". ") <= 1
    assert x.replay_helps is helps and (x.why_no_replay is None) is helps
