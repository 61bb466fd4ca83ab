"""Pieces shared by the partners' payload models."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["TICKET_NUMBER_PATTERN", "TicketRef", "render_value"]

TICKET_NUMBER_PATTERN = r"^T\d{8}\.\d{4,}$"


class TicketRef(BaseModel):
    """A ticket named by Autotask id or by ticket number (``T20261126.0042``); one is required."""

    model_config = ConfigDict(extra="allow")

    ticket_number: Annotated[str | None, Field(pattern=TICKET_NUMBER_PATTERN, max_length=50)] = None
    ticket_id: Annotated[int | None, Field(gt=0, lt=2**53)] = None

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
