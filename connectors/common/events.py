"""The event vocabulary shared by connectors and pipelines: types, sources, the typed PartnerEvent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["EventType", "Observation", "PartnerEvent", "Source", "StoredEvent"]


class StoredEvent(Protocol):
    """What a connector's ``to_event`` reads from a recorded event (the audit row satisfies it).

    A protocol rather than the audit table's class, so connectors never import the pipelines layer.
    """

    @property
    def body(self) -> bytes: ...

    @property
    def event_type(self) -> str: ...

    @property
    def external_id(self) -> str: ...


class Source(StrEnum):
    WEBFORM = "webform"
    MISSION_CONTROL = "mission-control"
    TIMEZEST = "timezest"
    AUTOTASK = "autotask"  # Autotask's own callouts and reconciliation, and what they reveal (MC, emailed form)
    ATRELAY = "atrelay"  # events atrelay derives itself (follow-ups)


class EventType(StrEnum):
    FORM_SUBMITTED = "form.submitted"
    MC_ESCALATED = "mc.escalated"
    MC_OUT_OF_SCOPE = "mc.out_of_scope"
    MC_NO_CONTACT = "mc.no_contact"
    MC_NO_CONTACT_FOLLOW_UP = "mc.no_contact.follow_up"
    TIMEZEST_LINK_SENT = "timezest.link_sent"
    TIMEZEST_SCHEDULED = "timezest.scheduled"
    TIMEZEST_CANCELLED = "timezest.cancelled"
    TIMEZEST_RESCHEDULED = "timezest.rescheduled"  # a booked appointment moved; the status stays
    # Knowledge-base rules Autotask cannot enforce, derived from what Autotask itself reports.
    GUARD_SCHEDULING_LINK = "guard.scheduling_link"
    GUARD_WAITING_AFTER_LINK = "guard.waiting_after_link"
    GUARD_COMPLETE_OPEN_CHECKLIST = "guard.complete_open_checklist"
    GUARD_DEFERRED_NO_DUE_DATE = "guard.deferred_no_due_date"
    GUARD_CLOBBERED = "guard.clobbered"


class Observation(StrEnum):
    """What Autotask itself reports (callouts, reconciliation). Not partner events: a run reads the
    ticket or note, records what changed, and derives partner events (``mc.*``, ``form.submitted``)
    from it by the rules table."""

    TICKET_CHANGED = "autotask.ticket.changed"
    NOTE_ADDED = "autotask.note.added"
    WEBHOOK_DEACTIVATED = "autotask.webhook.deactivated"  # recorded and shown, never acted on


class PartnerEvent(BaseModel):
    """What happened, who says so, and which ticket it concerns; enough to decide and to explain.

    ``details`` are the label/value lines the note shows (answers, technician, ...), rendered by the
    connector so nothing downstream reads a partner's raw dict.
    """

    model_config = ConfigDict(frozen=True)

    source: Source
    type: EventType
    external_id: str
    ticket_id: int | None = None
    ticket_number: str | None = None
    occurred_at: datetime
    summary: str
    details: list[tuple[str, str]] = Field(default_factory=list)
    expect_status_id: int | None = None  # follow-ups: only act while the ticket is still here
    caused_by_id: int | None = None
    # A follow-up that also carries its cause's note (the cause changed no status: its note waits for
    # the follow-up, so the ticket gets one note describing both).
    carries_note_of: int | None = None
    # The connector knows this occurrence changes no status whatever its type's rule says: a TimeZest
    # request cancelled before anyone booked was withdrawn by the agent who is already acting on it.
    note_only: bool = False
    # guard.clobbered: the status atrelay set and a stale edit form undid; re-applied instead of a fixed one.
    reapply_status: str | None = None

    @model_validator(mode="after")
    def _needs_ticket(self) -> PartnerEvent:
        if self.ticket_id is None and not self.ticket_number:
            raise ValueError("an event needs a ticket_id or a ticket_number")
        return self

    @property
    def ticket_ref(self) -> str:
        return str(self.ticket_id) if self.ticket_id is not None else str(self.ticket_number)
