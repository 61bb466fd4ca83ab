"""The one registry: event type -> the handler that turns a stored event into a PartnerEvent.

Grep here to see every event atrelay understands. A guard test fails when a type has no fixture
under ``tests/connectors/<name>/fixtures/`` or a fixture names no type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from pydantic import BaseModel

from connectors.autotask import derived as autotask_derived
from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent
from connectors.common.payloads import TicketRef
from connectors.mission_control import parse as mc_parse
from connectors.mission_control import verify as mc_verify
from connectors.timezest import parse as tz_parse
from connectors.webform import parse as webform_parse
from connectors.webform import verify as webform_verify
from pipelines import followups
from pipelines.clock import clamped_from

__all__ = ["EVENT_HANDLERS", "SOURCE_HANDLERS", "WEBHOOKS", "WebhookConnector", "parse_stored"]

Handler = Callable[[StoredEvent], PartnerEvent]

EVENT_HANDLERS: dict[EventType, Handler] = {
    EventType.FORM_SUBMITTED: webform_parse.to_event,
    EventType.MC_ESCALATED: mc_parse.to_event,
    EventType.MC_OUT_OF_SCOPE: mc_parse.to_event,
    EventType.MC_NO_CONTACT: mc_parse.to_event,
    EventType.MC_NO_CONTACT_FOLLOW_UP: followups.to_event,
    EventType.TIMEZEST_LINK_SENT: tz_parse.to_event,
    EventType.TIMEZEST_SCHEDULED: tz_parse.to_event,
    EventType.TIMEZEST_CANCELLED: tz_parse.to_event,
    EventType.TIMEZEST_RESCHEDULED: tz_parse.to_event,
    # Knowledge-base guards: derived from what Autotask reported (source autotask, body SeenInAutotask).
    EventType.GUARD_SCHEDULING_LINK: autotask_derived.to_event,
    EventType.GUARD_WAITING_AFTER_LINK: autotask_derived.to_event,
    EventType.GUARD_COMPLETE_OPEN_CHECKLIST: autotask_derived.to_event,
    EventType.GUARD_DEFERRED_NO_DUE_DATE: autotask_derived.to_event,
    EventType.GUARD_CLOBBERED: autotask_derived.to_event,
}


class Payload(Protocol):
    """What the ingress needs from a validated payload to index the stored event."""

    @property
    def event_type(self) -> EventType: ...

    @property
    def timestamp(self) -> datetime: ...

    @property
    def data(self) -> TicketRef: ...


@dataclass(frozen=True)
class WebhookConnector:
    source: Source
    path: str
    verify: Callable[[bytes, Mapping[str, str], list[str]], str]  # body, headers, secrets -> id
    parse: Callable[[bytes], Payload]
    fixture_dir: str
    model: type[BaseModel]  # the payload contract, published in the ingress's OpenAPI


WEBHOOKS: dict[Source, WebhookConnector] = {
    Source.WEBFORM: WebhookConnector(
        Source.WEBFORM, "/webhooks/webform", webform_verify.verify, webform_parse.parse_payload, "webform",
        webform_parse.WebformPayload,
    ),
    Source.MISSION_CONTROL: WebhookConnector(
        Source.MISSION_CONTROL, "/webhooks/mission-control", mc_verify.verify, mc_parse.parse_payload,
        "mission_control", mc_parse.MissionControlPayload,
    ),
}


#: Events whose source decides the handler: the same ``mc.*`` type seen through Autotask has another body.
SOURCE_HANDLERS: dict[str, Handler] = {
    Source.AUTOTASK.value: autotask_derived.to_event,
}


def parse_stored(row: StoredEvent) -> PartnerEvent:
    """Step 1 of the pipeline: re-parse the stored raw bytes into a typed event."""
    source = getattr(row, "source", None)
    handler = SOURCE_HANDLERS.get(source) if isinstance(source, str) else None
    handler = handler or EVENT_HANDLERS.get(EventType(row.event_type))
    if handler is None:
        raise ValueError(f"no handler for event type {row.event_type!r}")
    event = handler(row)
    recorded = getattr(row, "occurred_at", None)
    if clamped_from(getattr(row, "headers", None)) is not None and recorded is not None:
        # The body still says what the partner said; the run orders by the clamped time.
        event = event.model_copy(update={"occurred_at": recorded})
    return event
