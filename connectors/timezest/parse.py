"""TimeZest scheduling requests (API shape) and the events the poller derives from their changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent

__all__ = ["STATUS_EVENTS", "AssociatedEntity", "SchedulingRequest", "occurred_at", "to_event"]

RequestStatus = Literal["new", "sent", "scheduled", "cancelled", "closed"]

#: TimeZest status -> the event a change into it emits (``new`` and ``closed`` emit nothing).
STATUS_EVENTS: dict[str, EventType] = {
    "sent": EventType.TIMEZEST_LINK_SENT,
    "scheduled": EventType.TIMEZEST_SCHEDULED,
    "cancelled": EventType.TIMEZEST_CANCELLED,
}


class AssociatedEntity(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    id: int | None = None
    number: str | None = None


class NamedRef(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str | None = None
    name: str | None = None


class SchedulingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    status: RequestStatus
    associated_entities: list[AssociatedEntity] = Field(default_factory=list)
    end_user_name: str | None = None
    end_user_email: str | None = None
    scheduled_agents: list[NamedRef] = Field(default_factory=list)
    scheduled_at: int | None = None
    selected_start_time: int | None = None
    selected_time_zone: str | None = None
    created_at: int
    updated_at: int

    @property
    def autotask_ticket(self) -> AssociatedEntity | None:
        return next((e for e in self.associated_entities if e.type == "autotask/ticket"), None)

    def changed_at(self) -> datetime:
        """When the request reached its current status, as near as the API tells."""
        stamp = self.scheduled_at if self.status == "scheduled" and self.scheduled_at else self.updated_at
        return datetime.fromtimestamp(stamp, tz=UTC)

    @property
    def was_booked(self) -> bool:
        """Someone picked a time at some point (a cancelled request keeps its booked time and stamp)."""
        return self.scheduled_at is not None or self.selected_start_time is not None


def occurred_at(req: SchedulingRequest, etype: EventType) -> datetime:
    """The event's moment: a reschedule happened at ``updated_at``, not at the original booking
    (``scheduled_at`` is kept when the time moves, so it would date the reschedule too early and make
    it look older than anything that happened on the ticket since the booking)."""
    if etype is EventType.TIMEZEST_RESCHEDULED:
        return datetime.fromtimestamp(req.updated_at, tz=UTC)
    return req.changed_at()


def _when(ts: int | None, zone: str | None) -> str:
    if not ts:
        return "-"
    text = datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{text} (client's zone: {zone})" if zone else text


def to_event(row: StoredEvent) -> PartnerEvent:
    req = SchedulingRequest.model_validate_json(row.body)
    etype = EventType(row.event_type)
    ticket = req.autotask_ticket
    summary = {
        EventType.TIMEZEST_LINK_SENT: "TimeZest sent the scheduling link",
        EventType.TIMEZEST_SCHEDULED: "the client booked an appointment in TimeZest",
        EventType.TIMEZEST_CANCELLED: "the booked TimeZest appointment was cancelled" if req.was_booked
        else "the TimeZest scheduling request was cancelled before anyone booked",
        EventType.TIMEZEST_RESCHEDULED: "the TimeZest appointment was moved to a new time",
    }[etype]
    details = [
        ("TimeZest request", req.id),
        ("End user", " ".join(p for p in (req.end_user_name, f"<{req.end_user_email}>" if req.end_user_email
                                          else None) if p) or "-"),
    ]
    if etype is EventType.TIMEZEST_SCHEDULED:
        details.append(("Appointment", _when(req.selected_start_time, req.selected_time_zone)))
        details.append(("With", ", ".join(a.name or a.id or "?" for a in req.scheduled_agents) or "-"))
    elif etype is EventType.TIMEZEST_RESCHEDULED:
        details.append(("New appointment", _when(req.selected_start_time, req.selected_time_zone)))
        details.append(("With", ", ".join(a.name or a.id or "?" for a in req.scheduled_agents) or "-"))
    elif etype is EventType.TIMEZEST_CANCELLED and req.was_booked:
        details.append(("Cancelled appointment", _when(req.selected_start_time, req.selected_time_zone)))
    return PartnerEvent(
        source=Source.TIMEZEST,
        type=etype,
        external_id=row.external_id,
        ticket_id=ticket.id if ticket else None,
        ticket_number=ticket.number if ticket else None,
        occurred_at=occurred_at(req, etype),
        summary=summary,
        details=details,
        # Only a booked appointment's cancellation leaves work for the office (the rules' status);
        # an unbooked request is withdrawn by the agent who is handling the ticket: a note says so.
        note_only=etype is EventType.TIMEZEST_CANCELLED and not req.was_booked,
    )
