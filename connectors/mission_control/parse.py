"""Mission Control escalations: ``mc.escalated | mc.out_of_scope | mc.no_contact``."""

from __future__ import annotations

from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent
from connectors.common.payloads import TicketRef

__all__ = ["MissionControlPayload", "parse_payload", "to_event"]

_SUMMARY = {
    EventType.MC_ESCALATED: "Mission Control escalated the ticket",
    EventType.MC_OUT_OF_SCOPE: "Mission Control escalated the ticket as out of scope",
    EventType.MC_NO_CONTACT: "Mission Control could not reach the user",
}


class McData(TicketRef):
    summary: str | None = Field(default=None, max_length=8000)
    technician: str | None = Field(default=None, max_length=200)
    contact_attempts: int | None = Field(default=None, ge=0, le=1000)


class MissionControlPayload(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["mc.escalated", "mc.out_of_scope", "mc.no_contact"]
    timestamp: AwareDatetime
    data: McData

    @property
    def event_type(self) -> EventType:
        return EventType(self.type)


def parse_payload(body: bytes) -> MissionControlPayload:
    return MissionControlPayload.model_validate_json(body)


def to_event(row: StoredEvent) -> PartnerEvent:
    payload = parse_payload(row.body)
    data = payload.data
    details = [
        ("MC summary", data.summary or "-"),
        ("MC technician", data.technician or "-"),
        ("Contact attempts", "-" if data.contact_attempts is None else str(data.contact_attempts)),
    ]
    return PartnerEvent(
        source=Source.MISSION_CONTROL,
        type=payload.event_type,
        external_id=row.external_id,
        ticket_id=data.ticket_id,
        ticket_number=data.ticket_number,
        occurred_at=payload.timestamp,
        summary=_SUMMARY[payload.event_type],
        details=details,
    )
