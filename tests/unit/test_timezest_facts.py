"""What atrelay's note adds to TimeZest's own note for a transition (pipelines.gate.timezest_facts): only the
facts TimeZest's note does not say."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from connectors.common.events import EventType, PartnerEvent, Source
from pipelines.gate import timezest_facts

WHEN = "2030-01-09 15:30 UTC (client's zone: Eastern Time (US & Canada))"


def event(etype: EventType, *details: tuple[str, str]) -> PartnerEvent:
    return PartnerEvent(source=Source.TIMEZEST, type=etype, external_id="sreq_1:x", ticket_id=1,
                        occurred_at=datetime(2030, 1, 7, tzinfo=UTC), summary="s",
                        details=[("TimeZest request", "sreq_1"), ("End user", "Jane <jane@example.com>"), *details])


@pytest.mark.parametrize("said", [
    "The TimeZest appointment of Wed 2030-01-09 15:30 UTC was cancelled.",
    "Appointment on January 9 at 3:30 PM cancelled by the client",
    "cancelled: 9 Jan, 15:30",
])
def test_a_cancellation_note_giving_the_time_leaves_atrelay_nothing_to_add(said: str) -> None:
    assert timezest_facts(event(EventType.TIMEZEST_CANCELLED, ("Cancelled appointment", WHEN)), said) == []


@pytest.mark.parametrize("said", [
    "The TimeZest appointment was cancelled.",  # no time at all
    "The appointment of Wed 2030-01-10 15:30 UTC was cancelled.",  # another day
    "The appointment of January 9 at 3:30 AM was cancelled.",  # another clock time
    "The appointment of January 19 at 15:30 was cancelled.",  # a day that only starts like it
])
def test_a_cancellation_note_without_that_time_gets_it_from_atrelay_and_nothing_else(said: str) -> None:
    facts = timezest_facts(event(EventType.TIMEZEST_CANCELLED, ("Cancelled appointment", WHEN)), said)
    assert facts == [("Cancelled appointment", WHEN)]


def test_a_cancellation_before_anyone_booked_has_nothing_to_add() -> None:
    assert timezest_facts(event(EventType.TIMEZEST_CANCELLED), "") == []


def test_a_reschedule_adds_the_new_time_and_whom_only_when_unsaid() -> None:
    e = event(EventType.TIMEZEST_RESCHEDULED, ("New appointment", WHEN), ("With", "Tech One, Tech Two"))
    assert timezest_facts(e, "Jane moved it to 2030-01-09 15:30 UTC with Tech One and Tech Two") == []
    assert timezest_facts(e, "Jane moved it to 2030-01-09 15:30 UTC with Tech One") == [("With", "Tech One, Tech Two")]
    assert timezest_facts(e, "Jane moved the TimeZest appointment.") == [("New appointment", WHEN),
                                                                          ("With", "Tech One, Tech Two")]


def test_link_sent_and_scheduled_have_no_facts_to_add() -> None:
    for etype in (EventType.TIMEZEST_LINK_SENT, EventType.TIMEZEST_SCHEDULED):
        assert timezest_facts(event(etype, ("Appointment", WHEN)), "") == []
