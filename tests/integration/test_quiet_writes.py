"""atrelay's own verified write spares the next event's TicketHistory read, and nothing else does.

When atrelay has just written a ticket (a status whose gate found nobody else had changed it, then its
note), the ticket's recent activity is atrelay's own: the next partner event on it needs no TicketHistory
read to know that nobody else changed the status (pipelines/gate.py ``_own_write_explains``). These tests
hold the other side too: a person's change after that write, or the same status set back by a person and
then hidden under another atrelay note, is still found and still wins. Calls are counted by the Autotask
sandbox, and what happened to the ticket is read from the sandbox's own history.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import httpx
import pytest

from connectors.autotask.errors import from_transport_error
from pipelines.gate import History, timezest_wrote
from pipelines.process import process_event
from pipelines.store import QUIET_NOTE
from sandboxes.autotask.data import SANDBOX_RESOURCES
from sandboxes.autotask.state import SandboxState
from tests.integration.helpers import add_event, make_context, mc_body, webform_body
from tests.integration.test_write_gate import atrelay_writes, due_now, iso, now, statuses

#: Event times are relative to now: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

TICKET = 50003
COMPLETE, SENT_FROM_MC, RECEIVED_FORM = 5, 29682845, 29682844


def _history_reads(sandbox: SandboxState) -> int:
    return sum(n for key, n in sandbox.calls.items() if "tickethistory" in key.lower())


def _escalation(db: str, minutes_ago: float) -> int:
    at = now() - timedelta(minutes=minutes_ago)
    return add_event(db, "mission-control", "mc.escalated", mc_body("mc.escalated", TICKET, when=iso(at)),
                     occurred_at=at, ticket_id=TICKET)


def _form(db: str, minutes_ago: float) -> int:
    at = now() - timedelta(minutes=minutes_ago)
    return add_event(db, "webform", "form.submitted", webform_body(TICKET, when=iso(at)), occurred_at=at,
                     ticket_id=TICKET)


def test_the_event_after_atrelays_own_write_reads_no_history(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    first, second = _escalation(db_url, 5), _form(db_url, 4)
    assert process_event(ctx, first).state == "applied"
    before = _history_reads(sandbox)
    assert process_event(ctx, second).state == "applied"
    assert _history_reads(sandbox) == before  # the activity after the form's time was atrelay's alone
    assert statuses(sandbox, TICKET) == [SENT_FROM_MC, RECEIVED_FORM]


def test_a_persons_change_after_atrelays_write_is_still_found(db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The person's callout is lost: only the ticket (its last activity is the person's) and its history tell."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    first, second = _escalation(db_url, 5), _form(db_url, 4)
    assert process_event(ctx, first).state == "applied"
    sandbox.set_status(TICKET, COMPLETE, actor="technician")
    before = _history_reads(sandbox)
    result = process_event(ctx, second)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert _history_reads(sandbox) == before + 1
    assert statuses(sandbox, TICKET) == [SENT_FROM_MC, COMPLETE]


def test_a_persons_change_hidden_under_another_atrelay_note_is_still_found(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A person completes the ticket and sets atrelay's status back (both callouts lost); then atrelay notes
    another event on it (superseded: a note instead of the status). The ticket shows atrelay's status and
    its last activity is atrelay's note, yet the form dated before the person's changes must not land:
    atrelay's note cleared the verified write, so the form's gate reads the history."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    first, form, later_form = _escalation(db_url, 5), _form(db_url, 4), _form(db_url, 3)
    assert process_event(ctx, first).state == "applied"
    sandbox.set_status(TICKET, COMPLETE, actor="technician")
    sandbox.set_status(TICKET, SENT_FROM_MC, actor="technician")
    noted = process_event(ctx, later_form)
    assert noted.state == "skipped" and noted.reason is not None and "superseded" in noted.reason
    assert sandbox.tickets[TICKET]["lastActivityResourceID"] == SANDBOX_RESOURCES["atrelay"]
    assert sandbox.tickets[TICKET]["status"] == SENT_FROM_MC
    result = process_event(ctx, form)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert atrelay_writes(sandbox, TICKET) == [SENT_FROM_MC]
    assert statuses(sandbox, TICKET) == [SENT_FROM_MC, COMPLETE, SENT_FROM_MC]


def test_timezests_check_reads_no_history_after_atrelays_own_write(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """A booking moments after atrelay's own write: the ticket shows that write and nothing but atrelay acted
    since, so whatever TimeZest set before it is not on the ticket, and no history is read to find out."""
    url, sandbox = autotask
    ctx = make_context(db_url, url, timezest_resource_id=SANDBOX_RESOURCES["timezest"])
    assert process_event(ctx, _escalation(db_url, 1)).state == "applied"
    lists = ctx.lists()
    ticket = ctx.client.get_ticket(TICKET)
    before = _history_reads(sandbox)
    assert timezest_wrote(ctx, ticket, around=now(), target_id=lists.status_id("Scheduled"), lists=lists,
                          history=History(ctx, ticket.id)) == []
    assert _history_reads(sandbox) == before
    sandbox.set_status(TICKET, lists.status_id("Scheduled"), actor="timezest")  # TimeZest acts after all
    sandbox.set_status(TICKET, SENT_FROM_MC, actor="technician")  # and a person undoes it
    ticket = ctx.client.get_ticket(TICKET)
    assert timezest_wrote(ctx, ticket, around=now(), target_id=lists.status_id("Scheduled"), lists=lists,
                          history=History(ctx, ticket.id)) == [lists.status_id("Scheduled")]
    assert _history_reads(sandbox) == before + 1


def test_a_persons_change_hidden_under_the_writes_own_late_note_is_still_found(
        db_url: str, autotask: tuple[str, SandboxState]) -> None:
    """The escalation's PATCH lands, its note gets a 429; a person completes the ticket and sets atrelay's
    status back (callouts lost); the note's retry lands. The ticket shows atrelay's status and its last
    activity is atrelay's note, yet a form dated before the person's changes must not land: a note that
    landed this long after its PATCH clears the verified write (found by review, reproduced first)."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    first, form = _escalation(db_url, 5), _form(db_url, 4)
    sandbox.script = [{"endpoint": "tickets/notes", "method": "POST", "status": 429, "retry_after": 1,
                       "errors": ["API request threshold exceeded"]}]
    assert process_event(ctx, first).state == "retrying"
    sandbox.set_status(TICKET, COMPLETE, actor="technician")
    sandbox.set_status(TICKET, SENT_FROM_MC, actor="technician")
    time.sleep(QUIET_NOTE.total_seconds())  # the retry comes after its countdown, never at once
    due_now(db_url, first)
    assert process_event(ctx, first).state == "applied"
    assert sandbox.tickets[TICKET]["lastActivityResourceID"] == SANDBOX_RESOURCES["atrelay"]
    result = process_event(ctx, form)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert atrelay_writes(sandbox, TICKET) == [SENT_FROM_MC]


def test_a_persons_change_hidden_under_a_note_in_doubt_is_still_found(
        db_url: str, autotask: tuple[str, SandboxState], monkeypatch: pytest.MonkeyPatch) -> None:
    """The escalation's note is slow: while it is on its way a person completes the ticket and sets atrelay's
    status back, then the note lands and its answer is lost (a timeout). Until a re-run settles the note, the
    form dated before the person's changes reads the history and is superseded."""
    url, sandbox = autotask
    ctx = make_context(db_url, url)
    first, form = _escalation(db_url, 5), _form(db_url, 4)
    post = ctx.client.add_ticket_note

    def slow_note(*args: Any, **kwargs: Any) -> int:
        monkeypatch.setattr(ctx.client, "add_ticket_note", post)  # once: the form's own note goes through
        sandbox.set_status(TICKET, COMPLETE, actor="technician")
        sandbox.set_status(TICKET, SENT_FROM_MC, actor="technician")
        post(*args, **kwargs)  # lands after the person's changes
        raise from_transport_error(httpx.ReadTimeout("timed out"), "POST", "Tickets/50003/Notes")

    monkeypatch.setattr(ctx.client, "add_ticket_note", slow_note)
    assert process_event(ctx, first).state == "retrying"
    assert sandbox.tickets[TICKET]["lastActivityResourceID"] == SANDBOX_RESOURCES["atrelay"]
    result = process_event(ctx, form)
    assert result.state == "skipped" and result.reason is not None and "superseded" in result.reason
    assert atrelay_writes(sandbox, TICKET) == [SENT_FROM_MC]
