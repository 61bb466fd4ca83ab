"""Partner events seen through Autotask: Mission Control's status changes and the emailed form.

A ticket or note callout (or reconciliation) is an *observation*; when the rules table says a
change means something (Mission Control set ``MC No Contact``; a note titled "New User Form" was
emailed in), the run records a derived event whose body is :class:`SeenInAutotask`, and this module
turns it into the same :class:`PartnerEvent` the signed MC and web-form webhooks produce.

Guard events (``guard.*``, the knowledge-base rules Autotask cannot enforce) carry the rule's name,
its knowledge-base line and how to undo it in the body, so the one note atrelay writes says which
rule it applied and how to take it back.
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from connectors.common.events import EventType, PartnerEvent, Source, StoredEvent

__all__ = ["SeenInAutotask", "to_event"]


class SeenInAutotask(BaseModel):
    """What an observation run saw, kept as the derived event's body (so it can be replayed)."""

    model_config = ConfigDict(extra="ignore")

    kind: Literal["status", "note"]
    ticket_id: int
    ticket_number: str | None = None
    changed_at: AwareDatetime
    by_resource_id: int | None = None
    by_contact_id: int | None = None
    via: Literal["callout", "reconciliation"] = "callout"
    cause_event_id: int
    status_id: int | None = None
    status_label: str | None = None
    note_id: int | None = None
    note_title: str | None = Field(default=None, max_length=250)
    # Guards: which rule, the KB line it enforces, how to undo it, what it found.
    guard: str | None = None
    kb: str | None = None
    undo: str | None = None
    expect_status_id: int | None = None  # act only while the ticket is still in the status seen
    reapply_status: str | None = None  # guard.clobbered: the status atrelay set, to set again
    found: list[str] = Field(default_factory=list)  # e.g. the open checklist items, the link seen

    def encode(self) -> bytes:
        return json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()


def _who(seen: SeenInAutotask) -> str:
    if seen.by_resource_id is not None:
        return f"resource #{seen.by_resource_id}"
    if seen.by_contact_id is not None:
        return f"contact #{seen.by_contact_id}"
    return "someone in Autotask"


_SUMMARY = {
    EventType.MC_ESCALATED: "Mission Control escalated the ticket (status set in Autotask)",
    EventType.MC_OUT_OF_SCOPE: "Mission Control escalated the ticket as out of scope (status set in Autotask)",
    EventType.MC_NO_CONTACT: "Mission Control could not reach the user (status set in Autotask)",
    EventType.FORM_SUBMITTED: "the new user form was emailed into the ticket",
    EventType.GUARD_SCHEDULING_LINK: "a TimeZest scheduling link was pasted into a note by hand, and "
                                     "TimeZest does not set Scheduling Link Sent for that",
    EventType.GUARD_WAITING_AFTER_LINK: "the ticket was set to Waiting Customer while a TimeZest scheduling "
                                        "request is still open",
    EventType.GUARD_COMPLETE_OPEN_CHECKLIST: "the ticket was set to Complete with checklist items still open",
    EventType.GUARD_DEFERRED_NO_DUE_DATE: "the ticket is Deferred without a due date ahead",
    EventType.GUARD_CLOBBERED: "a status atrelay had just set was put back by an edit form opened before it",
}


def to_event(row: StoredEvent) -> PartnerEvent:
    seen = SeenInAutotask.model_validate_json(row.body)
    etype = EventType(row.event_type)
    details: list[tuple[str, str]] = [("Seen in Autotask", f"{seen.changed_at:%Y-%m-%d %H:%M UTC} by {_who(seen)}"
                                       f" (via {seen.via})")]
    if seen.guard is not None:
        details += _guard_details(seen)
    elif seen.kind == "status":
        details.append(("Status set", seen.status_label or f"#{seen.status_id}"))
    else:
        details.append(("Emailed note", f"#{seen.note_id}: {seen.note_title or '-'}"))
        details.append(("Answers", "in the emailed note itself (not copied)"))
    return PartnerEvent(
        source=Source.AUTOTASK, type=etype, external_id=row.external_id, ticket_id=seen.ticket_id,
        ticket_number=seen.ticket_number, occurred_at=seen.changed_at,
        summary=_SUMMARY.get(etype, f"{etype.value} seen in Autotask"), details=details,
        expect_status_id=seen.expect_status_id, reapply_status=seen.reapply_status,
    )


def _guard_details(seen: SeenInAutotask) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if seen.kind == "status":
        lines.append(("Status seen", seen.status_label or f"#{seen.status_id}"))
    else:
        lines.append(("Note", f"#{seen.note_id}: {seen.note_title or '-'}"))
    lines += [("Found", item) for item in seen.found]
    lines.append(("Knowledge-base rule", f"{seen.guard}: {seen.kb or '-'}"))
    if seen.undo:
        lines.append(("To undo", seen.undo))
    return lines
