"""Issue 25 end to end, on both deployments: when TimeZest's own PSA actions have written to the ticket,
atrelay verifies and repairs, and never repeats it.

The TimeZest sandbox plays TimeZest's "update ticket status" and note actions (as TimeZest's API
resource, through the Autotask sandbox); Autotask's callouts reach the stack's ingress; the poller
sees the request move the same way. What the tests read is the Autotask sandbox's own record.
"""

from __future__ import annotations

from typing import Any

import httpx

from sandboxes.timezest.app import TimezestSandboxState
from tests.e2e.test_autotask_e2e import atrelay_notes, idle, install, patches, rows, status_of
from tests.e2e.test_timezest_e2e import _poll, _settled
from tests.stacks import Stack
from tests.support import sandbox_ticket

PSA = {"sent": "Scheduling Link Sent", "scheduled": "Scheduled"}


def psa(tz: TimezestSandboxState, stack: Stack, **statuses: Any) -> None:
    tz.psa_actions = {"autotask_url": stack.sandbox_url, "statuses": {**PSA, **statuses}, "notes": True}


def timezest_notes(stack: Stack, ticket: int) -> list[dict[str, Any]]:
    return [n for n in sandbox_ticket(stack.sandbox_url, ticket)["notes"] if n["title"].startswith("TimeZest:")]


def settle(stack: Stack) -> None:
    idle(stack)  # every callout delivered (TimeZest's own changes and notes) ...
    _settled(stack)  # ... and every event finished


def test_timezest_wrote_it_so_atrelay_writes_nothing(stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    install(stack)
    psa(tz, stack)
    req = tz.create({"ticket_id": 50004})
    _poll(stack, url)
    tz.transition(req["id"], "sent")
    settle(stack)
    _poll(stack, url)
    settle(stack)
    tz.transition(req["id"], "scheduled")
    settle(stack)
    _poll(stack, url)
    settle(stack)
    assert status_of(stack, 50004) == "Scheduled"
    assert len(timezest_notes(stack, 50004)) == 2 and atrelay_notes(stack, 50004) == []
    assert patches(stack) == 0
    polled = [r for r in rows(stack) if r.event_type.startswith("timezest.")]
    assert [(r.event_type, r.state) for r in polled] == [("timezest.link_sent", "applied"),
                                                         ("timezest.scheduled", "applied")]
    assert all((r.reason or "").startswith("already-set-by-timezest") for r in polled)


def test_timezest_actions_off_atrelay_sets_both_and_says_so(stack: Stack,
                                                            timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    install(stack)
    req = tz.create({"ticket_id": 50005})
    _poll(stack, url)
    for status, label in (("sent", "Scheduling Link Sent"), ("scheduled", "Scheduled")):
        tz.transition(req["id"], status)
        _poll(stack, url)
        settle(stack)
        assert status_of(stack, 50005) == label
    notes = atrelay_notes(stack, 50005)
    assert len(notes) == 2 and timezest_notes(stack, 50005) == []
    assert all("TimeZest's own status update had not arrived" in n["description"] for n in notes)


def test_timezest_scheduled_undone_by_an_edit_form_is_restored_once(
        stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    """TimeZest sets Scheduled; a technician's edit form, opened before, saves Scheduling Link Sent back.
    atrelay restores Scheduled once, with one note; the poller's event then writes nothing more."""
    url, tz = timezest
    install(stack)
    psa(tz, stack)
    req = tz.create({"ticket_id": 50006})
    tz.transition(req["id"], "sent")
    settle(stack)
    tz.transition(req["id"], "scheduled")
    settle(stack)
    httpx.post(f"{stack.sandbox_url}/_sandbox/tickets/50006/status",
               json={"status": "Scheduling Link Sent", "as": "technician"}).raise_for_status()
    settle(stack)
    _poll(stack, url)
    settle(stack)
    assert status_of(stack, 50006) == "Scheduled"
    (note,) = atrelay_notes(stack, 50006)
    assert "guard-clobbered" in note["description"]
    assert len(timezest_notes(stack, 50006)) == 2 and patches(stack) == 1


def test_a_cancellation_timezest_set_its_own_status_for_stays(
        stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    install(stack)
    psa(tz, stack, cancelled="Follow Up Needed:Resource")
    req = tz.create({"ticket_id": 50003})
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    settle(stack)
    _poll(stack, url)
    settle(stack)
    tz.transition(req["id"], "cancelled")
    settle(stack)
    _poll(stack, url)
    settle(stack)
    assert status_of(stack, 50003) == "Follow Up Needed:Resource"  # TimeZest's choice, not overwritten
    assert patches(stack) == 0
    (note,) = atrelay_notes(stack, 50003)
    assert "TimeZest set Follow Up Needed:Resource for the cancellation itself" in note["description"]
    assert "Cancelled appointment" in note["description"]  # what it adds to TimeZest's own note
