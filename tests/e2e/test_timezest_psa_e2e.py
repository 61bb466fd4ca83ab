"""Issue 25 end to end, on both deployments: when TimeZest's own PSA actions have written to the ticket,
atrelay verifies and repairs, and never repeats it.

The TimeZest sandbox plays TimeZest's "update ticket status" and note actions (as TimeZest's API
resource, through the Autotask sandbox); Autotask's callouts reach the stack's ingress; the poller
sees the request move the same way. What the tests read is the Autotask sandbox's own record.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from sandboxes.timezest.app import TimezestSandboxState
from tests.e2e.test_autotask_e2e import atrelay_notes, idle, install, patches, rows, status_of
from tests.e2e.test_timezest_e2e import _poll, _settled
from tests.stacks import Stack
from tests.support import sandbox_ticket

PSA = {"sent": "Scheduling Link Sent", "scheduled": "Scheduled"}


def psa(tz: TimezestSandboxState, stack: Stack, terse: bool = False, **statuses: Any) -> None:
    """TimeZest's PSA actions on; ``terse``: its cancellation note leaves out the appointment's time."""
    tz.psa_actions = {"autotask_url": stack.sandbox_url, "statuses": {**PSA, **statuses}, "notes": True,
                      "terse": terse}


def booked_at(req: dict[str, Any]) -> str:
    """The appointment's time as atrelay's note gives it (connectors.timezest.parse)."""
    return datetime.fromtimestamp(req["selected_start_time"], tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


@contextmanager
def rules_file(stack: Stack, text: str) -> Iterator[None]:
    """The stack's worker replaced by one running with this rules file (the stack is shared: restored after)."""
    path = stack.tmp / "timezest-rules.toml"
    path.write_text(text)

    def stop_workers() -> None:
        for proc in [p for p in stack.procs if p.name.startswith("worker")]:
            proc.stop()
            stack.procs.remove(proc)

    stop_workers()
    try:
        stack.start_worker(env={"ATRELAY_RULES_FILE": str(path)})
        yield
    finally:
        stop_workers()
        stack.start_worker()


def timezest_notes(stack: Stack, ticket: int) -> list[dict[str, Any]]:
    return [n for n in sandbox_ticket(stack.sandbox_url, ticket)["notes"] if n["title"].startswith("TimeZest:")]


def settle(stack: Stack) -> None:
    idle(stack)  # every callout delivered (TimeZest's own changes and notes) ...
    _settled(stack)  # ... and every event finished


def poll_settled(stack: Stack, url: str) -> None:
    """What TimeZest did so far settled in Autotask, then atrelay's poll of it settled too."""
    settle(stack)
    _poll(stack, url)
    settle(stack)


def test_timezest_wrote_it_so_atrelay_writes_nothing(stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    url, tz = timezest
    install(stack)
    psa(tz, stack)
    req = tz.create({"ticket_id": 50004})
    _poll(stack, url)
    tz.transition(req["id"], "sent")
    poll_settled(stack, url)
    tz.transition(req["id"], "scheduled")
    poll_settled(stack, url)
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
    poll_settled(stack, url)
    assert status_of(stack, 50006) == "Scheduled"
    (note,) = atrelay_notes(stack, 50006)
    assert "guard-clobbered" in note["description"]
    assert len(timezest_notes(stack, 50006)) == 2 and patches(stack) == 1


def book_then_cancel(stack: Stack, url: str, tz: TimezestSandboxState, ticket: int) -> dict[str, Any]:
    req = tz.create({"ticket_id": ticket})
    tz.transition(req["id"], "sent")
    tz.transition(req["id"], "scheduled")
    poll_settled(stack, url)
    tz.transition(req["id"], "cancelled")
    poll_settled(stack, url)
    return tz.requests[req["id"]]


def cancellation(stack: Stack, ticket: int) -> Any:
    (row,) = [r for r in rows(stack) if r.event_type == "timezest.cancelled" and r.ticket_id == ticket]
    return row


@pytest.mark.parametrize("terse", [False, True], ids=["timezest-says-the-time", "timezest-leaves-it-out"])
def test_a_cancellation_timezest_set_its_own_status_for_stays(
        stack: Stack, timezest: tuple[str, TimezestSandboxState], terse: bool) -> None:
    """TimeZest sets its own status for the cancellation and notes it: the status stays (no PATCH). atrelay's
    note is written only when TimeZest's note lacks the cancelled appointment's time, and says only that."""
    url, tz = timezest
    install(stack)
    psa(tz, stack, terse=terse, cancelled="Follow Up Needed:Resource")
    req = book_then_cancel(stack, url, tz, 50003)
    assert status_of(stack, 50003) == "Follow Up Needed:Resource"  # TimeZest's choice, not overwritten
    assert patches(stack) == 0 and len(timezest_notes(stack, 50003)) == 3
    row = cancellation(stack, 50003)
    assert row.state == "applied" and (row.reason or "").startswith("already-set-by-timezest"), row.reason
    if not terse:
        assert atrelay_notes(stack, 50003) == []  # TimeZest's note already says the time
        return
    (note,) = atrelay_notes(stack, 50003)
    text = note["description"]
    assert "TimeZest set Follow Up Needed:Resource for it itself and it stays" in text
    assert f"Cancelled appointment: {booked_at(req)}" in text  # what it adds to TimeZest's own note ...
    assert "End user" not in text and "TimeZest request:" not in text  # ... and nothing TimeZest said


def test_a_request_cancelled_before_anyone_booked_is_noted_by_timezest_alone(
        stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    """A request cancelled before anyone booked moves no status (note only): TimeZest's own note for the
    cancellation says it all, so atrelay writes nothing, though it moves no status either."""
    url, tz = timezest
    install(stack)
    psa(tz, stack)
    req = tz.create({"ticket_id": 50002})
    tz.transition(req["id"], "sent")
    poll_settled(stack, url)
    tz.transition(req["id"], "cancelled")
    poll_settled(stack, url)
    assert status_of(stack, 50002) == "Scheduling Link Sent"
    assert [n["title"] for n in timezest_notes(stack, 50002)] == ["TimeZest: scheduling request sent",
                                                                   "TimeZest: scheduling request cancelled"]
    assert atrelay_notes(stack, 50002) == [] and patches(stack) == 0
    row = cancellation(stack, 50002)
    assert row.state == "applied" and (row.reason or "").startswith("already-noted-by-timezest"), row.reason


def test_leave_timezest_s_status_on_a_cancellation(stack: Stack, timezest: tuple[str, TimezestSandboxState]) -> None:
    """`[events."timezest.cancelled"] status = ""`: TimeZest's own status for the cancellation stays, and
    atrelay notes only what TimeZest's note did not say (the time, on 50003), nothing where it said it all
    (50004)."""
    url, tz = timezest
    install(stack)
    with rules_file(stack, '[events."timezest.cancelled"]\nstatus = ""\n'):
        psa(tz, stack, terse=True, cancelled="Follow Up Needed:Resource")
        terse = book_then_cancel(stack, url, tz, 50003)
        psa(tz, stack, cancelled="Follow Up Needed:Resource")
        book_then_cancel(stack, url, tz, 50004)
    for ticket in (50003, 50004):
        assert status_of(stack, ticket) == "Follow Up Needed:Resource"
        row = cancellation(stack, ticket)
        assert row.state == "applied" and (row.reason or "").startswith("already-noted-by-timezest"), row.reason
    assert patches(stack) == 0
    (note,) = atrelay_notes(stack, 50003)
    text = note["description"]
    assert f"Cancelled appointment: {booked_at(terse)}" in text
    assert "does not say the cancelled appointment" in text and "End user" not in text
    assert atrelay_notes(stack, 50004) == []
