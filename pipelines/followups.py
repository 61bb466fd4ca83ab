"""Events atrelay derives itself: the knowledge base's "MC No Contact -> Waiting Customer" rule."""

from __future__ import annotations

import json
from datetime import datetime

from pydantic import AwareDatetime, BaseModel

from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent

__all__ = ["FollowUpBody", "to_event"]


class FollowUpBody(BaseModel):
    cause_event_id: int
    cause_type: EventType
    ticket_id: int
    expect_status_id: int
    expect_status: str
    occurred_at: AwareDatetime
    cause_note_deferred: bool = False

    def encode(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()


def to_event(row: StoredEvent) -> PartnerEvent:
    body = FollowUpBody.model_validate_json(row.body)
    occurred: datetime = body.occurred_at
    return PartnerEvent(
        source=Source.ATRELAY,
        type=EventType(row.event_type),
        external_id=row.external_id,
        ticket_id=body.ticket_id,
        occurred_at=occurred,
        summary=(
            f"workflow rule: {body.expect_status!r} is moved on to the next status "
            f"(follow-up of atrelay event #{body.cause_event_id})"
        ),
        details=[("Caused by", f"atrelay event #{body.cause_event_id} ({body.cause_type})")],
        expect_status_id=body.expect_status_id,
        caused_by_id=body.cause_event_id,
        carries_note_of=body.cause_event_id if body.cause_note_deferred else None,
    )
