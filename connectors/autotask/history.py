"""TicketHistory: reading whether a ticket's status changed after a moment (pure, no I/O).

``POST TicketHistory/query`` (filtered on ``ticketID``) returns ``{id, ticketID, action, detail, date,
resourceID}`` rows. Datto does not document the ``action``/``detail`` texts, so atrelay relies on as
little as it can, and says so (docs/connectors/autotask.md):

* a row is a **status change** when its ``detail`` (or ``action``) names the *status* field, e.g.
  ``"Status changed from New to Complete"``, and it is not a note or time-entry row;
* its moment is ``date``; who made it is ``resourceID`` (null for a contact).

Anything that does not mention the status is not a status change, so a note or a time entry after an
event never makes the event "superseded".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["HistoryEntry", "status_changes_after"]

_STATUS = re.compile(r"\bstatus\b", re.IGNORECASE)
_NOT_A_CHANGE = re.compile(r"\bnote\b|time\s*entry|attachment", re.IGNORECASE)


class HistoryEntry(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    id: int
    ticket_id: int | None = Field(default=None, alias="ticketID")
    action: str | None = None
    detail: str | None = None
    date: datetime | None = None
    resource_id: int | None = Field(default=None, alias="resourceID")

    @property
    def when(self) -> datetime | None:
        if self.date is None:
            return None
        return self.date if self.date.tzinfo is not None else self.date.replace(tzinfo=UTC)

    @property
    def is_status_change(self) -> bool:
        text = f"{self.action or ''} {self.detail or ''}"
        return bool(_STATUS.search(text)) and not _NOT_A_CHANGE.search(self.action or "")


def status_changes_after(entries: list[HistoryEntry], after: datetime, *,
                         ignore_resource: int | None = None) -> list[HistoryEntry]:
    """Status changes dated after ``after``, oldest first, leaving out ``ignore_resource``'s (atrelay's)."""
    out = [e for e in entries if e.is_status_change and e.when is not None and e.when > after
           and (ignore_resource is None or e.resource_id != ignore_resource)]
    return sorted(out, key=lambda e: (e.when or after, e.id))
