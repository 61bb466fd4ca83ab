"""Pieces shared by the partners' payload models."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["TICKET_NUMBER_PATTERN", "TicketRef", "normalise_ticket_number", "render_value"]

# ASCII digits only: the schema's regex engine reads ``\d`` as any Unicode digit (a full-width 2, U+FF12, would pass).
TICKET_NUMBER_PATTERN = r"^T[0-9]{8}\.[0-9]{4,}$"
#: What a ticket number may look like before normalisation: any case, any sequence length.
_LOOSE_TICKET_NUMBER = re.compile(r"T(\d{8})\.(\d{1,50})", re.IGNORECASE | re.ASCII)


def normalise_ticket_number(value: str) -> str:
    """A ticket number in Autotask's own form when only its spelling is off, else ``value`` unchanged.

    Why: partners type or template these by hand; ``" T20261126.0001"``, ``"t20261126.0001"`` and
    ``"T20261126.1"`` can only mean T20261126.0001 (Autotask writes ``TYYYYMMDD.NNNN``, the daily
    sequence padded to four digits: the Tickets entity's ticketNumber field), and refusing them loses
    the event. Only what is unambiguous is fixed: surrounding whitespace, the letter's case, a short
    sequence. Anything else (no ``T``, a date of another length, inner spaces) is left for the
    pattern to refuse.
    """
    match = _LOOSE_TICKET_NUMBER.fullmatch(value.strip())
    if match is None:
        return value
    date, sequence = match.groups()
    return f"T{date}.{sequence.zfill(4)}"


class TicketRef(BaseModel):
    """A ticket named by Autotask id or by ticket number (``T20261126.0042``); one is required."""

    model_config = ConfigDict(extra="allow")

    ticket_number: Annotated[str | None, Field(pattern=TICKET_NUMBER_PATTERN, max_length=50)] = None
    ticket_id: Annotated[int | None, Field(gt=0, lt=2**53)] = None

    @field_validator("ticket_number", mode="before")
    @classmethod
    def _normalise(cls, value: object) -> object:
        return normalise_ticket_number(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _one_ref(self) -> TicketRef:
        if self.ticket_number is None and self.ticket_id is None:
            raise ValueError("give ticket_number or ticket_id")
        return self


def render_value(value: Any) -> str:
    """A partner's answer as note text: lists joined, nested objects flattened, None as a dash."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(render_value(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k}: {render_value(v)}" for k, v in value.items())
    return str(value)
