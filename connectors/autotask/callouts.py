"""Autotask's own webhook callouts (ticket and ticket-note webhooks): verify and parse.

Signature: ``X-Hook-Signature``, verified over the raw bytes or over their .NET escaping
(connectors/autotask/verify.py, re-exported here).

Payload: ``{"Action", "Guid", "EntityType", "Id", "Fields": {PascalCase: value}, "EventTime",
"SequenceNumber", "PersonID"}``. Which fields appear is not documented for certain, so ``Fields`` is a
hint: the pipeline re-reads what a rule needs. How Autotask spells the members is not settled either
(public integrations read ``PersonID`` and ``PersonId``; entity names are reported singular and plural),
so top-level members are matched case-insensitively and entity names singular or plural; what a callout
means (:attr:`CalloutPayload.entity`, :attr:`CalloutPayload.verb`) is then decided from that, and an
entity or action atrelay does not know is named as such, never guessed.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from connectors.autotask.verify import (
    SIGNATURE_HEADER,
    CalloutVerificationFailed,
    SignatureForm,
    autotask_escape,
    verify_callout,
)

__all__ = [
    "SIGNATURE_HEADER",
    "CalloutPayload",
    "CalloutVerificationFailed",
    "Entity",
    "SignatureForm",
    "Verb",
    "autotask_escape",
    "canonical_digest",
    "dedupe_key",
    "parse_callout",
    "verify_callout",
]

Entity = Literal["ticket", "note"]
Verb = Literal["create", "update", "delete"]
#: Entity names as Autotask's webhooks (and the integrations that read them) spell them, lower-cased.
_ENTITIES: dict[str, Entity] = {"ticket": "ticket", "tickets": "ticket", "ticketnote": "note", "ticketnotes": "note"}
_VERBS: dict[str, Verb] = {"create": "create", "update": "update", "delete": "delete"}
#: Top-level members by their lower-cased name -> the spelling the model reads.
_MEMBERS = {name.lower(): name for name in ("Action", "Guid", "EntityType", "Id", "Fields", "EventTime",
                                            "SequenceNumber", "PersonID")}


class CalloutPayload(BaseModel):
    """One callout as Autotask posts it; unknown members are kept, absent ones tolerated."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    action: str = Field(alias="Action", max_length=64)
    # A webhook GUID: printable characters only (it becomes part of the event's key in the audit DB).
    guid: str | None = Field(default=None, alias="Guid", max_length=100, pattern=r"^[\x21-\x7e]*$")
    entity_type: str = Field(alias="EntityType", max_length=200)
    id: int = Field(alias="Id", gt=0, lt=2**53)
    fields: dict[str, Any] = Field(default_factory=dict, alias="Fields")
    event_time: datetime | None = Field(default=None, alias="EventTime")
    sequence_number: int | None = Field(default=None, alias="SequenceNumber", ge=0, lt=2**63)
    person_id: int | None = Field(default=None, alias="PersonID", lt=2**53)

    @model_validator(mode="before")
    @classmethod
    def _any_spelling(cls, data: Any) -> Any:
        """``PersonId``, ``personID``, ``ENTITYTYPE``...: the spelling the model reads; twice is refused."""
        if not isinstance(data, dict):
            return data
        out: dict[str, Any] = {}
        for key, value in data.items():
            name = _MEMBERS.get(key.lower(), key) if isinstance(key, str) else key
            if name in out:
                raise ValueError(f"{name} given twice, in different spellings")
            out[name] = value
        return out

    @property
    def entity(self) -> Entity | None:
        """``ticket`` or ``note`` however spelled (``Ticket``, ``Tickets``, ``TicketNote``...); None: another."""
        return _ENTITIES.get(self.entity_type.lower())

    @property
    def verb(self) -> Verb | None:
        """``create``, ``update`` or ``delete`` however capitalised; None: an action atrelay does not know."""
        return _VERBS.get(self.action.lower())

    def field(self, name: str) -> Any:
        """A member of ``Fields`` by name, case-insensitively (PascalCase on the wire)."""
        wanted = name.lower()
        return next((v for k, v in self.fields.items() if k.lower() == wanted), None)

    @property
    def is_note(self) -> bool:
        return self.entity == "note"

    @property
    def ticket_id(self) -> int | None:
        """The ticket concerned: the entity itself, or a note's ``TicketID``."""
        if not self.is_note:
            return self.id
        value = self.field("TicketID")
        return int(value) if isinstance(value, int) or (isinstance(value, str) and value.isdigit()) else None


def parse_callout(body: bytes) -> CalloutPayload:
    return CalloutPayload.model_validate_json(body)


def canonical_digest(body: bytes) -> str:
    """SHA-256 of the JSON value ``body`` holds, whatever its escaping, spacing or key order.

    A callout delivered once escaped (``\\u0026``) and once as is (``&``) is the same callout: keyed by
    its raw bytes it would count twice. Only a signed body gets here, so the parse is of authenticated
    JSON; lone surrogates (a ``\\ud800`` escape) are kept as they are.
    """
    value = json.loads(body)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def dedupe_key(payload: CalloutPayload, body: bytes) -> str:
    """One key per callout, however often (and however escaped) Autotask delivers it.

    Notes are keyed by note id, so a note found by reconciliation and its late callout are one event.
    Ticket updates are keyed by (webhook GUID, ticket id, sequence number); without a sequence
    number, by the digest of the JSON value (:func:`canonical_digest`), so the same callout twice,
    escaped or not, is the same key.
    """
    if payload.is_note and payload.verb == "create":
        return f"note:{payload.id}"
    if payload.guid and payload.sequence_number is not None:
        return f"{payload.guid}:{payload.id}:{payload.sequence_number}"
    return "sha256:" + canonical_digest(body)
