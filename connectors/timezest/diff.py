"""The pure half of the TimeZest poll: given what was seen before and what TimeZest lists now, which events.

No I/O and no state: the caller (``pipelines.timezest_poll``) reads what it saw last from the audit
database, lists requests with the client, and records what this returns.

A change of status emits ``timezest.<status>`` with external id ``"{request id}:{status}"``, so
re-polls never duplicate. A request first seen already ``scheduled`` emits only that. During the very
first poll (the bootstrap) only requests changed since ``recent_cutoff`` emit events, so switching
atrelay on does not replay months of history onto old tickets.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from connectors.common.events import EventType
from connectors.timezest.parse import STATUS_EVENTS, SchedulingRequest

__all__ = ["Change", "diff", "listing_floor"]

OVERLAP_SECONDS = 3600  # requests created shortly before the mark may appear late in the listing


@dataclass(frozen=True)
class Change:
    """One event the poll owes: ``ticketless`` ones are recorded as ignored, not run."""

    request: SchedulingRequest
    event_type: EventType
    external_id: str

    @property
    def ticketless(self) -> bool:
        ticket = self.request.autotask_ticket
        return ticket is None or (ticket.id is None and not ticket.number)


def listing_floor(high_water: int | None) -> int | None:
    """Stop listing (newest first) below this ``created_at``; None lists the whole bootstrap window."""
    return None if high_water is None else int(high_water) - OVERLAP_SECONDS


def diff(known: Mapping[str, str], seen: Iterable[SchedulingRequest], *, bootstrap: bool,
         recent_cutoff: int) -> list[Change]:
    """Events for requests whose status differs from ``known`` (request id -> last seen status)."""
    changes: list[Change] = []
    for req in seen:
        if known.get(req.id) == req.status:
            continue
        etype = STATUS_EVENTS.get(req.status)
        if etype is None or (bootstrap and req.updated_at < recent_cutoff):
            continue
        changes.append(Change(req, etype, f"{req.id}:{req.status}"))
    return changes
