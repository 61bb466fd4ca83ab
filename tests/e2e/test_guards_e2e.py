"""The knowledge-base guards end to end (issue 12): the sandbox emits Autotask's signed callouts as a
person, a contact or TimeZest; real workers see the breach and write the status and exactly one note
naming the rule and how to undo it. Each inverse case changes nothing and writes nothing, and a rule
switched off in the rules file leaves its event ``ignored`` with the reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from pipelines.audit import InboundEvent, TimezestRequest
from pipelines.db import session_scope
from pipelines.reconcile import reconcile_once
from sandboxes.autotask.state import SandboxState
from sandboxes.common.server import ThreadedServer
from tests.e2e.test_autotask_e2e import (
    act,
    add_note,
    atrelay_notes,
    client,
    idle,
    install,
    patches,
    rows,
    status_of,
)
from tests.e2e.test_autotask_e2e import (
    settle as _settle,
)
from tests.integration.helpers import webform_body
from tests.stacks import Stack, start_stack
from tests.support import WEBFORM_SECRET, wait_for

#: Its outcome depends on today's date: tests/test_clock_ahead.py runs it a year ahead too.
pytestmark = pytest.mark.date_sensitive

DEFERRED = 29682836
LINK = "Pick a time that suits you: https://msp.timezest.com/taylor-tech/remote-30?ticket=T20261126.0002"


def change(stack: Stack, ticket: int, who: str = "technician", **fields: Any) -> None:
    httpx.patch(f"{stack.sandbox_url}/_sandbox/tickets/{ticket}", json={**fields, "as": who}).raise_for_status()


def checklist(stack: Stack, ticket: int, *items: dict[str, Any]) -> None:
    httpx.post(f"{stack.sandbox_url}/_sandbox/tickets/{ticket}/checklist",
               json={"items": list(items)}).raise_for_status()


def settle(stack: Stack, ticket: int, status: str, timeout: float = 60) -> list[InboundEvent]:
    """The shared settle, failing with every event's state and reason (what the guards decided)."""
    try:
        return _settle(stack, ticket, status, timeout)
    except AssertionError as exc:
        story = "\n".join(f"#{e.id} {e.event_type} {e.state}: {e.reason}" for e in rows(stack))
        raise AssertionError(f"{str(exc)[:300]}\n{story}") from None


def guard_events(stack: Stack) -> list[InboundEvent]:
    return [e for e in rows(stack) if e.event_type.startswith("guard.")]


def quiet(stack: Stack) -> list[InboundEvent]:
    """Wait for the callouts to be delivered and every event to finish."""
    idle(stack)
    return stack.all_final(len(rows(stack)))


def one_guard_note(stack: Stack, ticket: int, rule: str) -> dict[str, Any]:
    notes = [n for n in atrelay_notes(stack, ticket) if rule in n["description"]]
    assert len(notes) == 1, notes
    assert "Knowledge-base rule" in notes[0]["description"] and "To undo" in notes[0]["description"]
    return notes[0]


# ---- rule 1: a scheduling link pasted by hand ---------------------------------------------------
def test_scheduling_link_pasted_by_a_technician_sets_scheduling_link_sent(dist: Stack) -> None:
    install(dist)
    add_note(dist, 50002, "Booking your appointment", LINK, who="technician")
    events = settle(dist, 50002, "Scheduling Link Sent")
    assert [(e.event_type, e.state) for e in events if e.event_type.startswith("guard.")] == [
        ("guard.scheduling_link", "applied")], [(e.event_type, e.state, e.reason) for e in events]
    note = one_guard_note(dist, 50002, "guard-scheduling-link")
    assert "TZ will not do it" in note["description"] and "msp.timezest.com" in note["description"]
    assert len(atrelay_notes(dist, 50002)) == 1 and patches(dist) == 1


def test_scheduling_link_by_timezest_or_on_a_scheduled_ticket_changes_nothing(dist: Stack) -> None:
    install(dist)
    add_note(dist, 50002, "Your scheduling link", LINK, who="timezest")  # TimeZest's own note
    act(dist, 50003, "Scheduled", "technician")
    add_note(dist, 50003, "Link again", LINK, who="technician")  # already scheduled
    add_note(dist, 50004, "Printer", "no link here, see https://example.com/timezest", who="technician")
    events = quiet(dist)
    assert guard_events(dist) == [], [(e.event_type, e.reason) for e in events]
    assert (status_of(dist, 50002), status_of(dist, 50003), status_of(dist, 50004)) == ("New", "Scheduled", "New")
    assert atrelay_notes(dist, 50002) == atrelay_notes(dist, 50003) == atrelay_notes(dist, 50004) == []
    assert patches(dist) == 0


# ---- rule 2: Waiting Customer after a scheduling link --------------------------------------------
def _tz_request(stack: Stack, ticket: int, status: str) -> None:
    with session_scope(stack.db) as s:
        s.add(TimezestRequest(id=f"req-{ticket}", status=status, ticket_id=ticket, created_at=1_795_000_000,
                              updated_at=1_795_000_000))


def test_waiting_customer_with_a_link_still_open_goes_back_to_scheduling_link_sent(dist: Stack) -> None:
    install(dist)
    _tz_request(dist, 50003, "sent")  # what the TimeZest poller last saw
    act(dist, 50003, "Waiting Customer", "technician")
    settle(dist, 50003, "Scheduling Link Sent")
    (event,) = guard_events(dist)
    assert (event.event_type, event.state) == ("guard.waiting_after_link", "applied")
    note = one_guard_note(dist, 50003, "guard-waiting-after-link")
    assert "req-50003" in note["description"] and "Use SCHEDULING LINK SENT" in note["description"]
    assert len(atrelay_notes(dist, 50003)) == 1 and patches(dist) == 1


def test_waiting_customer_without_an_open_link_changes_nothing(dist: Stack) -> None:
    install(dist)
    _tz_request(dist, 50003, "scheduled")
    act(dist, 50003, "Waiting Customer", "technician")
    quiet(dist)
    assert guard_events(dist) == [] and status_of(dist, 50003) == "Waiting Customer"
    assert atrelay_notes(dist, 50003) == [] and patches(dist) == 0


# ---- rule 3: Complete with open checklist items --------------------------------------------------
def test_complete_with_an_open_important_item_is_reopened(stack: Stack) -> None:
    install(stack)
    checklist(stack, 50004, {"itemName": "Confirm the backup ran", "isImportant": True},
              {"itemName": "Label the laptop", "isImportant": False},
              {"itemName": "Wipe the old disk", "isImportant": True, "isCompleted": True})
    act(stack, 50004, "Complete", "technician")
    settle(stack, 50004, "Incomplete - Re-opened")
    (event,) = guard_events(stack)
    assert (event.event_type, event.state) == ("guard.complete_open_checklist", "applied")
    note = one_guard_note(stack, 50004, "guard-complete-open-checklist")
    assert "Confirm the backup ran" in note["description"]
    assert "Label the laptop" not in note["description"] and "Wipe the old disk" not in note["description"]
    assert len(atrelay_notes(stack, 50004)) == 1 and patches(stack) == 1


def test_complete_with_only_unimportant_items_open_changes_nothing(dist: Stack) -> None:
    install(dist)
    checklist(dist, 50004, {"itemName": "Label the laptop", "isImportant": False},
              {"itemName": "Wipe the old disk", "isImportant": True, "isCompleted": True})
    act(dist, 50004, "Complete", "technician")
    quiet(dist)
    assert guard_events(dist) == [] and status_of(dist, 50004) == "Complete"
    assert atrelay_notes(dist, 50004) == [] and patches(dist) == 0


# ---- rule 4: Deferred without a due date ahead ---------------------------------------------------
def test_deferred_with_a_past_due_date_needs_follow_up(stack: Stack) -> None:
    dist = stack  # both deployments: the embedded one is run a year ahead too (tests/test_clock_ahead.py)
    install(dist)
    change(dist, 50005, dueDateTime=(datetime.now(UTC) - timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    # Let the due-date callout's run finish first: a first-sight run that reads the ticket after the
    # status changed records that status as the baseline, and the status callout is then no change.
    quiet(dist)
    act(dist, 50005, "Deferred", "technician")
    settle(dist, 50005, "Follow Up Needed:Resource")
    (event,) = guard_events(dist)
    assert (event.event_type, event.state) == ("guard.deferred_no_due_date", "applied")
    note = one_guard_note(dist, 50005, "guard-deferred-no-due-date")
    assert "YOU MUST UPDATE THE DUE DATE" in note["description"] and "not in the future" in note["description"]
    assert len(atrelay_notes(dist, 50005)) == 1 and patches(dist) == 1


def test_deferred_with_a_due_date_ahead_changes_nothing_until_reconciliation_finds_it_overdue(stack: Stack) -> None:
    dist = stack  # both deployments: the embedded one is run a year ahead too (tests/test_clock_ahead.py)
    install(dist)
    with client(dist) as c:
        reconcile_once(dist.db, c, dist.enqueue, watched_status_ids=set(), own_resource_id=None)  # baseline
    act(dist, 50006, "Deferred", "technician")  # due two days after the sandbox started: ahead
    quiet(dist)
    assert guard_events(dist) == [] and status_of(dist, 50006) == "Deferred"
    assert atrelay_notes(dist, 50006) == [] and patches(dist) == 0
    # The due date passes (set back here) without the reminder rule moving the ticket: no callout says so.
    change(dist, 50006, dueDateTime=(datetime.now(UTC) - timedelta(days=10)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    quiet(dist)
    assert guard_events(dist) == []
    with client(dist) as c:
        result = reconcile_once(dist.db, c, dist.enqueue, watched_status_ids=set(), own_resource_id=None,
                                overdue_status_id=DEFERRED)
    assert result.outcome == "ok" and result.emitted
    settle(dist, 50006, "Follow Up Needed:Resource")
    note = one_guard_note(dist, 50006, "guard-deferred-no-due-date")
    assert "found by reconciliation" in note["description"]
    assert len(atrelay_notes(dist, 50006)) == 1 and patches(dist) == 1


# ---- rule 5: a status undone by a stale edit form ------------------------------------------------
def test_a_stale_edit_form_undoing_atrelays_status_is_reapplied_once(stack: Stack) -> None:
    install(stack)
    assert stack.post("/webhooks/webform", webform_body("T20261126.0001"), WEBFORM_SECRET).status_code == 202
    settle(stack, 50001, "Received Form Response")
    form_notes = len(atrelay_notes(stack, 50001))
    act(stack, 50001, "New", "technician")  # the technician's form, opened before, saved now
    wait_for(lambda: guard_events(stack) or None, what="the clobber guard")
    settle(stack, 50001, "Received Form Response")
    (event,) = guard_events(stack)
    assert (event.event_type, event.state) == ("guard.clobbered", "applied"), event.reason
    note = one_guard_note(stack, 50001, "guard-clobbered")
    assert "set the status again" in note["description"]
    assert len(atrelay_notes(stack, 50001)) == form_notes + 1 and patches(stack) == 2
    # The same change made again is deliberate: it stands, nothing more is written.
    act(stack, 50001, "New", "technician")
    events = quiet(stack)
    assert status_of(stack, 50001) == "New" and len(guard_events(stack)) == 1, [(e.event_type, e.reason)
                                                                                for e in events]
    assert len(atrelay_notes(stack, 50001)) == form_notes + 1 and patches(stack) == 2


def test_a_change_to_another_status_after_atrelays_is_left_alone(dist: Stack) -> None:
    install(dist)
    assert dist.post("/webhooks/webform", webform_body("T20261126.0001"), WEBFORM_SECRET).status_code == 202
    settle(dist, 50001, "Received Form Response")
    before = (patches(dist), len(atrelay_notes(dist, 50001)))
    act(dist, 50001, "In Progress", "technician")
    quiet(dist)
    assert guard_events(dist) == [] and status_of(dist, 50001) == "In Progress"
    assert (patches(dist), len(atrelay_notes(dist, 50001))) == before


# ---- switched off in the rules file --------------------------------------------------------------
RULES_OFF = """
[autotask."guard-complete-open-checklist"]
enabled = false
[autotask."guard-scheduling-link"]
enabled = false
"""


@pytest.fixture(scope="module")
def guards_off(tmp_path_factory: pytest.TempPathFactory,
               autotask_server: tuple[ThreadedServer, SandboxState]) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("guards-off")
    rules = Path(tmp / "rules.toml")
    rules.write_text(RULES_OFF)
    server, state = autotask_server
    stack = start_stack(tmp, mode="embedded", sandbox_server=server, sandbox=state,
                        env_extra={"ATRELAY_RULES_FILE": str(rules)})
    yield stack
    stack.stop()


def test_a_guard_switched_off_records_its_event_ignored_with_the_reason(guards_off: Stack) -> None:
    stack = guards_off
    stack.clean()
    try:
        install(stack)
        checklist(stack, 50004, {"itemName": "Confirm the backup ran", "isImportant": True})
        act(stack, 50004, "Complete", "technician")
        add_note(stack, 50002, "Booking", LINK, who="technician")
        quiet(stack)
        found = {e.event_type: e for e in guard_events(stack)}
        assert set(found) == {"guard.complete_open_checklist", "guard.scheduling_link"}, found
        for event in found.values():
            assert event.state == "ignored" and event.reason is not None
            assert event.reason.startswith("rule-disabled: [autotask.'guard-") and "rules file" in event.reason
        assert status_of(stack, 50004) == "Complete" and status_of(stack, 50002) == "New"
        assert atrelay_notes(stack, 50004) == atrelay_notes(stack, 50002) == [] and patches(stack) == 0
    finally:
        stack.sandbox.reset()
