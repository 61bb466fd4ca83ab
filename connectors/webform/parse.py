"""The MSP web form's payload: ``form.submitted`` -> a typed PartnerEvent with the answers."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent
from connectors.common.payloads import TicketRef, render_value

__all__ = ["WebformPayload", "parse_payload", "to_event"]


class Submitter(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)


class WebformData(TicketRef):
    form: str = Field(min_length=1, max_length=100)
    submitted_by: Submitter | None = None
    answers: dict[str, Any] = Field(default_factory=dict)


class WebformPayload(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["form.submitted"]
    timestamp: AwareDatetime
    data: WebformData

    @property
    def event_type(self) -> EventType:
        return EventType.FORM_SUBMITTED


def parse_payload(body: bytes) -> WebformPayload:
    return WebformPayload.model_validate_json(body)


def to_event(row: StoredEvent) -> PartnerEvent:
    payload = parse_payload(row.body)
    data = payload.data
    who = data.submitted_by
    # The form's name and who submitted it are the sender's text: quoted with the answers in the note,
    # never part of atrelay's own "Why:" sentence (``summary``).
    details = [("Form", data.form)]
    if who is not None and (who.name or who.email):
        details.append(("Submitted by", " ".join(p for p in (who.name, f"<{who.email}>" if who.email else None) if p)))
    details += [(str(q), render_value(a)) for q, a in data.answers.items()]
    return PartnerEvent(
        source=Source.WEBFORM,
        type=payload.event_type,
        external_id=row.external_id,
        ticket_id=data.ticket_id,
        ticket_number=data.ticket_number,
        occurred_at=payload.timestamp,
        summary="a web form was submitted",
        details=details,
    )
