"""A person's change is never overwritten by an older partner event ("superseded"), on both databases.

The sandbox records every change in its TicketHistory with the real time; events are stamped relative
to now, so "after the event" is what the test says it is.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from pipelines import store
from pipelines.process import process_event
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

COMPLETE, NOTE_EMAILED_IN, RECEIVED_FORM = 5, 29682841, 29682844


def two_hours_ago() -> datetime:
    return datetime.now(UTC) - timedelta(hours=2)


def as_technician(url: str, ticket: int, status: str) -> None:
    httpx.post(f"{url}/_sandbox/tickets/{ticket}/status", json={"status": status, "as": "technician"}
               ).raise_for_status()


def history_reads(sandbox: SandboxState) -> int:
    return sum(n for k, n in sandbox.calls.items() if k.lower().startswith("post tickethistory"))


def test_a_late_escalation_does_not_reopen_a_ticket_a_technician_completed(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    when = two_hours_ago()
    as_technician(url, 50002, "Complete")  # now: after the event happened
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "mission-control", "mc.escalated", mc_body("mc.escalated", 50002,
                                                                            when.isoformat()), occurred_at=when)
    result = process_event(ctx, event_id)
    assert result.state == "skipped" and result.reason is not None
    assert result.reason.startswith("superseded:") and result.reason.endswith("note written"), result.reason
    assert sandbox.tickets[50002]["status"] == COMPLETE and sandbox.calls["PATCH tickets"] == 0
    (note,) = sandbox.notes.values()  # MC's summary still reaches the ticket, saying it was not applied
    assert "NOT applied" in note["description"] and "User did not answer" in note["description"]
    assert history_reads(sandbox) == 1  # the one extra read, only in this case
    assert process_event(ctx, event_id).state == "skipped" and len(sandbox.notes) == 1  # a re-run: nothing more


def test_a_change_seen_through_callouts_supersedes_without_reading_history(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    when = two_hours_ago()
    as_technician(url, 50002, "In Progress")
    store.observe_status(db_url, 50002, 8, changed_at=datetime.now(UTC), by_resource_id=29682885,
                         by_atrelay=False, via="callout", event_id=None)
    ctx = make_context(db_url, url)
    event_id = add_event(db_url, "mission-control", "mc.no_contact", mc_body("mc.no_contact", 50002,
                                                                            when.isoformat()), occurred_at=when)
    result = process_event(ctx, event_id)
    assert result.reason is not None and result.reason.startswith("superseded: resource #29682885 set In Progress")
    assert history_reads(sandbox) == 0 and sandbox.calls["PATCH tickets"] == 0
    assert len(sandbox.notes) == 1


def test_a_note_after_the_event_is_not_a_status_change(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    when = two_hours_ago()
    httpx.post(f"{url}/_sandbox/tickets/50001/notes", json={"title": "called the user", "description": "no answer",
                                                            "as": "technician"}).raise_for_status()
    ctx = make_context(db_url, url)
    body = json.loads(webform_body(50001))
    body["timestamp"] = when.isoformat()
    event_id = add_event(db_url, "webform", "form.submitted", json.dumps(body).encode(), occurred_at=when)
    result = process_event(ctx, event_id)
    assert (result.state, result.reason) == ("applied", None)
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM


def test_the_emailed_form_overrides_note_emailed_in(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """Autotask's own rule sets Note Emailed In for the very e-mail that carries the form."""
    url, sandbox = autotask
    when = two_hours_ago()
    as_technician(url, 50001, "Note Emailed In")
    ctx = make_context(db_url, url)
    body = json.loads(webform_body(50001))
    body["timestamp"] = when.isoformat()
    event_id = add_event(db_url, "webform", "form.submitted", json.dumps(body).encode(), occurred_at=when)
    assert process_event(ctx, event_id).state == "applied"
    assert sandbox.tickets[50001]["status"] == RECEIVED_FORM
